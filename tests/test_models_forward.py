"""Every registered architecture builds with 3 classes and runs one real forward pass at its minimum input size.

Speed: the time to build the big models goes into random weight initialisation (vit_h_14 and regnet_y_128gf have
630M+ parameters: 7-9 s each on 2 cores, more than their forward pass). ``fast_init`` replaces torch.nn.init's random initialisers, while the
model is built, by a tiled copy of one pre-drawn bank of unit-variance numbers scaled by 1/sqrt(fan_in) (the usual
initialisation scale), so the weights are real, finite and of sensible size, and the forward pass is the real one.
Constant initialisers (zeros_, ones_, constant_, ...) run unchanged.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from zoo.plugins import build_plugins

REGISTRY = build_plugins(autoload=False).models()  # the built-ins only, as the CLI sees them
CONSTANT_INITS = {"zeros_", "ones_", "constant_", "eye_", "dirac_"}
_BANK = torch.empty(65_537).uniform_(-math.sqrt(3.0), math.sqrt(3.0), generator=torch.Generator().manual_seed(0))


def _bank_fill(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Tile the bank (a prime length, so rows of a weight matrix do not repeat it in step) over ``tensor``."""
    with torch.no_grad():
        fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
        flat, k = tensor.view(-1), _BANK.numel()
        rows = flat.numel() // k
        flat[: rows * k].view(rows, k).copy_(_BANK.expand(rows, k))
        flat[rows * k:].copy_(_BANK[: flat.numel() - rows * k])
        flat.mul_(1.0 / math.sqrt(max(fan_in, 1)))
    return tensor


def _leave(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def fast_init(fill=_bank_fill):
    """While active, torch.nn.init's random initialisers fill from the bank (see the module docstring); with
    ``fill=_leave`` every initialiser, constant ones too, leaves the memory untouched (for a model moved to meta)."""
    saved = {}
    for name in dir(torch.nn.init):
        fn = getattr(torch.nn.init, name)
        if (name.endswith("_") and not name.startswith("_") and callable(fn)
                and (name not in CONSTANT_INITS or fill is _leave)):
            saved[name] = fn
            setattr(torch.nn.init, name, fill)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def test_fast_init_fills_finite_scaled_weights():
    with fast_init():
        layer = torch.nn.Linear(400, 7)
    assert torch.nn.init.kaiming_uniform_ is not _bank_fill  # restored
    assert torch.isfinite(layer.weight).all()
    assert 0 < layer.weight.abs().max().item() <= math.sqrt(3.0) / 20 + 1e-6  # 1/sqrt(400) scale
    assert layer.weight.std().item() > 0.02  # not constant


def test_registry_is_large():
    assert len(REGISTRY) >= 40


# timm's 1,000+ architectures are represented by its smallest ones (tests/test_timm.py has the rest of the plugin)
TIMM_SAMPLE = ["timm/resnet10t", "timm/mobilenetv3_small_050", "timm/test_vit", "timm/test_convnext"]
NAMES = [n for n in REGISTRY.names() if REGISTRY.get(n).source != "timm"]
NAMES += [n for n in TIMM_SAMPLE if n in REGISTRY]


# Over 250M parameters (vit_l_16/32, vit_h_14, regnet_y_128gf) building and running the model costs 10-25 s each on
# 2 cores; their forward runs on the meta device instead: the same Python code and every shape check of every layer,
# without the arithmetic. Their smaller siblings (vit_b_16, vit_b_32, regnet_y_32gf) run for real.
GIANT = 250_000_000


def _build_meta(info):
    try:
        with torch.device("meta"):
            return info.build(num_classes=3, pretrained=False)
    except NotImplementedError:  # regnet computes its widths with tensors: built in memory left as allocated, moved
        with fast_init(fill=_leave):
            return info.build(num_classes=3, pretrained=False).to("meta")


@pytest.mark.parametrize("name", NAMES)
def test_forward_at_min_size(name):
    info = REGISTRY.get(name)
    giant = (info.params or 0) > GIANT
    if giant:
        model, x = _build_meta(info), torch.empty(1, 3, info.min_size, info.min_size, device="meta")
    else:
        with fast_init():
            model = info.build(num_classes=3, pretrained=False)
        x = torch.randn(1, 3, info.min_size, info.min_size)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor), f"{name} returned {type(out).__name__}, not plain logits"
    assert out.shape == (1, 3)
    assert giant or torch.isfinite(out).all()


def test_giants_are_few_and_each_has_a_sibling_run_for_real():
    giants = [n for n in NAMES if (REGISTRY.get(n).params or 0) > GIANT]
    assert sorted(giants) == ["regnet_y_128gf", "vit_h_14", "vit_l_16", "vit_l_32"]


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_models_return_plain_logits_in_train_mode(name):
    info = REGISTRY.get(name)
    with fast_init():
        model = info.build(num_classes=3, pretrained=False)
    model.train()
    out = model(torch.randn(2, 3, info.min_size, info.min_size))  # batch of 2: BatchNorm in train mode
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


@pytest.mark.parametrize("name", ["alexnet", "inception_v3", "vit_b_32"])
def test_min_size_is_tight(name):
    """One pixel less than min_size fails for architectures with a hard lower limit."""
    info = REGISTRY.get(name)
    with fast_init():
        model = info.build(num_classes=3, pretrained=False).eval()
    with torch.no_grad(), pytest.raises(Exception):
        model(torch.randn(1, 3, info.min_size - 1, info.min_size - 1))


def _family_representatives() -> list[str]:
    """The first model of each torchvision family, plus the heads that differ inside a family."""
    first: dict[str, str] = {}
    for name in REGISTRY.names():
        info = REGISTRY.get(name)
        if info.plugin in {"alexnet", "resnet", "torchvision_models"}:
            first.setdefault(info.family, name)
    return sorted(set(first.values()) | {"mobilenet_v3_small", "swin_v2_t", "efficientnet_v2_s", "squeezenet1_0"})


@pytest.mark.parametrize("name", _family_representatives())
def test_replace_classifier_swaps_only_the_head(name):
    """What pretrained=True does after loading ImageNet weights, checked on a 1000-class model of every family."""
    import torchvision.models as tvm
    from zoo_builtin_plugins._tv import find_classifier, replace_classifier

    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    with fast_init():
        model = tvm.get_model(name, weights=None, num_classes=1000, **extra).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_name, head = find_classifier(model, 1000)
    head_keys = {f"{head_name}.{k}" for k, _ in head.named_parameters()}
    replace_classifier(model, 3, old_classes=1000)
    after = model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if after[k].shape != before[k].shape}
    assert changed and all(after[k].shape[0] == 3 and before[k].shape[0] == 1000 for k in changed)
    assert changed == head_keys  # weight (and bias, where the head has one) of the final layer only
    assert all(torch.equal(after[k], before[k]) for k in before if k not in changed)
    size = REGISTRY.get(name).min_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)
