"""Shared by the built-in torchvision plugins: builders, pretrained loading, and the generic classifier swap.

Importing this module imports no torch; only calling a builder does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from zoo.errors import ZooError

if TYPE_CHECKING:
    from torch import nn


class Arch(NamedTuple):
    """One torchvision architecture as a plugin registers it (no model is built to list it)."""

    name: str
    family: str
    params: int  # parameter count at 1000 classes (torchvision's weights metadata)
    min_size: int  # smallest square input in pixels
    default_size: int  # input size the weights were trained at
    weights: Optional[str]  # member of torchvision's weights enum loaded by pretrained=True
    description: str = ""

    def register(self, register: Callable[..., None], builder: Callable[..., "nn.Module"]) -> None:
        register(
            self.name, builder, family=self.family, description=self.description, min_size=self.min_size,
            default_size=self.default_size, pretrained=self.weights is not None, params=self.params,
            source="torchvision",
            weights_file=(lambda: weights_file(self.name, self.weights)) if self.weights else None,
        )


def make_builder(
    arch: Arch, *, kwargs: Optional[dict[str, Any]] = None, scratch_kwargs: Optional[dict[str, Any]] = None
) -> Callable[..., "nn.Module"]:
    """A keyword-only builder for a torchvision model. ``kwargs`` go to torchvision always, ``scratch_kwargs``
    only when building without pretrained weights."""
    fixed = dict(kwargs or {})
    scratch = dict(scratch_kwargs or {})

    def build(*, num_classes: int, pretrained: bool = False) -> "nn.Module":
        if pretrained:
            return load_pretrained(arch.name, arch.weights, num_classes, **fixed)
        import torchvision.models as tvm

        return tvm.get_model(arch.name, weights=None, num_classes=num_classes, **fixed, **scratch)

    build.__name__ = build.__qualname__ = f"build_{arch.name}"
    build.__doc__ = f"{arch.description or arch.name}: ``num_classes`` outputs; ``pretrained`` loads ImageNet weights."
    return build


def weights_cache_path(url: str) -> str:
    """Where torch hub keeps (or would keep) the weights file downloaded from ``url``."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))


def weights_file(name: str, weights: str) -> tuple[str, str]:
    """(path, url) of the file ``pretrained=True`` loads: where torch hub keeps it, and where it comes from."""
    import torchvision.models as tvm

    url = tvm.get_model_weights(name)[weights].url
    return weights_cache_path(url), url


def load_pretrained(name: str, weights: Optional[str], num_classes: int, **kwargs: Any) -> "nn.Module":
    """torchvision's model with its ImageNet weights (from torch hub's cache, downloaded once), then a fresh
    classifier with ``num_classes`` outputs. Offline without the cached file: a ZooError that says where to put it."""
    import torchvision.models as tvm

    if weights is None:
        raise ZooError(f"Model '{name}' has no pretrained weights; train it with --no-pretrained.")
    enum = tvm.get_model_weights(name)[weights]
    path = weights_cache_path(enum.url)
    try:
        model = tvm.get_model(name, weights=enum, **kwargs)
    except Exception as exc:
        if not os.path.exists(path):
            raise ZooError(
                f"Cannot download the pretrained weights of '{name}' ({type(exc).__name__}: {exc}). "
                f"Copy the file {os.path.basename(path)} from {enum.url} to {path}, "
                f"or pass a local weights file with --weights FILE."
            ) from exc
        raise ZooError(
            f"Cannot load the pretrained weights of '{name}' from {path} ({type(exc).__name__}: {exc}). "
            f"Delete the file to download it again, or pass a local weights file with --weights FILE."
        ) from exc
    drop_aux_heads(model)
    return replace_classifier(model, num_classes, old_classes=len(enum.meta["categories"]))


def drop_aux_heads(model: "nn.Module") -> "nn.Module":
    """Inception v3 and GoogLeNet load their ImageNet weights with auxiliary classifiers, which make them return
    a tuple in training mode: remove them so the model returns plain logits (as torchvision does itself when
    asked to with ``aux_logits=False``)."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for attr in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, attr):
                setattr(model, attr, None)
    return model


def find_classifier(model: "nn.Module", old_classes: Optional[int] = None) -> tuple[str, "nn.Module"]:
    """The qualified name and module of the final classifier: the last ``nn.Linear`` registered in the model
    (every torchvision family registers its head last), or, for heads without one (SqueezeNet), the last 1x1
    ``nn.Conv2d``. With ``old_classes``, only layers with that many outputs qualify."""
    from torch import nn

    linear: Optional[tuple[str, nn.Module]] = None
    conv: Optional[tuple[str, nn.Module]] = None
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Linear) and old_classes in (None, module.out_features):
            linear = (qualname, module)
        elif (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
              and old_classes in (None, module.out_channels)):
            conv = (qualname, module)
    found = linear or conv
    if found is None:
        raise ZooError(f"Cannot find the classifier layer of {type(model).__name__} to replace it.")
    return found


def replace_classifier(model: "nn.Module", num_classes: int, *, old_classes: Optional[int] = None) -> "nn.Module":
    """Swap the final classifier for a freshly initialised one with ``num_classes`` outputs; every other
    weight stays as it is. Returns the model."""
    from torch import nn

    qualname, old = find_classifier(model, old_classes)
    if isinstance(old, nn.Linear):
        if old.out_features == num_classes:
            return model
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)
        if old.out_channels == num_classes:
            return model
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride,
                        padding=old.padding, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = qualname.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return model
