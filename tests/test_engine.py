"""Engine: metrics, devices and precision, early stopping with restored weights, NaN stop, checkpoints, --weights."""

from __future__ import annotations

import math

from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.spec import Resolved, RunSpec

CPU = Resolved(device="cpu", precision="fp32", image_size=16)
BF16 = Resolved(device="cpu", precision="bf16", image_size=16)


def spec(**options) -> RunSpec:
    return RunSpec(model="tinycnn", data="unused", **options)


def test_metrics_from_a_hand_computed_confusion_matrix():
    from zoo.engine import metrics_from_confusion

    # rows = true class, columns = predicted class
    confusion = [[5, 1, 0],   # cat: 5 right, 1 taken for dog
                 [2, 3, 1],   # dog
                 [0, 0, 4]]   # fox, never predicted wrong; column sums 7, 4, 5
    m = metrics_from_confusion(confusion, ["cat", "dog", "fox"], loss=0.5)
    assert m["test_accuracy"] == pytest.approx(12 / 16) and m["test_loss"] == 0.5
    assert m["test_precision/cat"] == pytest.approx(5 / 7) and m["test_recall/cat"] == pytest.approx(5 / 6)
    assert m["test_precision/dog"] == pytest.approx(3 / 4) and m["test_recall/dog"] == pytest.approx(3 / 6)
    assert m["test_precision/fox"] == pytest.approx(4 / 5) and m["test_recall/fox"] == pytest.approx(1.0)
    f1_cat = 2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6)
    assert m["test_f1/cat"] == pytest.approx(f1_cat)
    assert m["test_f1/dog"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert m["test_precision"] == pytest.approx((5 / 7 + 3 / 4 + 4 / 5) / 3)
    assert m["test_recall"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert m["test_f1"] == pytest.approx((f1_cat + 0.6 + 2 * 0.8 / 1.8) / 3)
    # a class never predicted has precision 0 (not a division error)
    m = metrics_from_confusion([[2, 0], [3, 0]], ["a", "b"])
    assert m["test_precision/b"] == 0.0 and m["test_f1/b"] == 0.0 and "test_loss" not in m


def test_evaluate_counts_the_confusion_of_a_fixed_model():
    import torch

    from zoo.engine import evaluate

    class Echo(torch.nn.Module):  # logits = the first two pixels: prediction is chosen by the data
        def forward(self, x):
            return x.flatten(1)[:, :2]

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]).view(4, 2, 1, 1)
    y = torch.tensor([0, 1, 0, 1])
    loss, acc, confusion = evaluate(Echo(), [(x[:2], y[:2]), (x[2:], y[2:])], 2, torch.device("cpu"))
    assert confusion == [[1, 1], [1, 1]] and acc == 0.5
    expected = torch.nn.functional.cross_entropy(x.view(4, 2), y).item()
    assert loss == pytest.approx(expected)


def test_device_and_precision_resolution():
    import torch

    from zoo.engine import resolve_device, resolve_precision

    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ZooError, match="not a device"):
        resolve_device("tpu")
    with pytest.raises(ZooError, match="not one of"):
        resolve_precision("fp8", auto)
    with pytest.raises(ZooError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ZooError, match="no CUDA GPU"):
            resolve_device("cuda:0")


@pytest.fixture
def tiny(make_images):
    """Images, split and a CPU pipeline at 16 px, plus the tinycnn ModelInfo."""
    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.plugins import build_plugins

    root = make_images({"cat": 12, "dog": 12}, size=16)
    images = load_images(root, image_sizes=[16])
    split = split_samples(images, (4, 1, 1), 42)
    pipe = make_pipeline(images, split, image_size=16, batch_size=8, device="cpu")
    return images, pipe, build_plugins(autoload=False).models().get("tinycnn")


def test_early_stopping_stops_and_restores_the_best_weights(tiny, tmp_path):
    import torch

    from zoo.checkpoint import load_checkpoint
    from zoo.engine import Callbacks, build_model, train

    images, pipe, info = tiny
    config = spec(epochs=10, patience=2, min_delta=1e6, lr=0.05)  # nothing after epoch 1 is "better"
    model = build_model(info, 2, config, Callbacks())
    seen: dict[int, dict] = {}

    class Spy(Callbacks):
        def on_epoch_end(self, epoch, values, improved):
            seen[epoch] = {"improved": improved, "state": {k: v.clone() for k, v in model.state_dict().items()}}

    result = train(info, pipe, images.classes, config, CPU, Spy(), tmp_path / "best.pt", model=model)
    assert result.status == "completed" and result.stop_reason == "early_stop"
    assert result.epochs_run == 3 and result.best_epoch == 1 and len(result.history) == 3
    assert [seen[e]["improved"] for e in (1, 2, 3)] == [True, False, False]
    final = model.state_dict()
    assert all(torch.equal(final[k], seen[1]["state"][k]) for k in final)  # epoch 1's weights are back
    assert not all(torch.equal(final[k], seen[3]["state"][k]) for k in final)
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["classes"] == ["cat", "dog"] and checkpoint["image_size"] == 16
    assert all(torch.equal(checkpoint["state_dict"][k], final[k]) for k in final)
    assert set(result.metrics) >= {"test_accuracy", "test_loss", "test_f1", "test_precision/cat", "test_recall/dog"}
    assert sum(map(sum, result.confusion)) == len(pipe.split.test)
    keys = {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_sec"}
    rows = [h.as_row() for h in result.history]
    assert all(set(h) == keys and all(math.isfinite(v) for v in h.values()) for h in rows)


def test_max_epochs_also_restores_the_best_epoch(tiny, tmp_path):
    from zoo.engine import train

    images, pipe, info = tiny
    result = train(info, pipe, images.classes, spec(epochs=2, patience=5, min_delta=1e6), CPU, None,
                   tmp_path / "best.pt")
    assert result.stop_reason == "max_epochs" and result.best_epoch == 1 and result.epochs_run == 2


def nan_weights(info, path: Path) -> str:
    """A state_dict of NaN tensors for ``info``'s model: its loss is NaN from the first batch (an infinite --lr,
    the old way to get one, is refused up front now)."""
    import torch

    model = info.build(2)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, path)
    return str(path)


def test_nan_loss_stops_the_run_as_failed(tiny, tmp_path):
    from zoo.engine import train

    images, pipe, info = tiny
    nan = spec(epochs=3, weights=nan_weights(info, tmp_path / "nan.pt"))
    result = train(info, pipe, images.classes, nan, CPU, None, tmp_path / "best.pt")
    assert result.status == "failed" and result.stop_reason == "nan_loss"
    assert "--lr" in result.error and result.epochs_run == 0 and result.checkpoint is None
    assert not (tmp_path / "best.pt").exists() and not result.metrics
    assert "--precision" not in result.error  # the run was already fp32: that advice would change nothing


def test_nan_loss_in_bf16_suggests_fp32(tiny, tmp_path):
    from zoo.engine import train

    images, pipe, info = tiny
    result = train(info, pipe, images.classes, spec(epochs=3, weights=nan_weights(info, tmp_path / "nan.pt")),
                   BF16, None, tmp_path / "best.pt")
    assert result.status == "failed" and result.stop_reason == "nan_loss"
    assert "--lr" in result.error and "--precision fp32" in result.error


def test_weights_skip_a_mismatched_classifier(tmp_path):
    import torch

    from zoo.checkpoint import build_from_checkpoint, load_weights, save_checkpoint
    from zoo.plugins import build_plugins

    info = build_plugins(autoload=False).models().get("tinycnn")
    three = info.build(3)
    torch.save(three.state_dict(), tmp_path / "raw.pt")
    save_checkpoint(tmp_path / "zoo.pt", model="tinycnn", plugin="tinycnn", classes=["a", "b", "c"], image_size=32,
                    state_dict=three.state_dict(), epoch=4, mean=[0.5] * 3, std=[0.2] * 3)
    for name in ("raw.pt", "zoo.pt"):
        two = info.build(2)
        loaded, skipped = load_weights(two, tmp_path / name, "tinycnn")
        assert loaded == len(three.state_dict()) - 2
        assert [s.split(" ")[0] for s in skipped] == ["6.weight", "6.bias"] and "3x128" in skipped[0]
        assert torch.equal(two.state_dict()["0.0.weight"], three.state_dict()["0.0.weight"])
        assert two.state_dict()["6.weight"].shape == (2, 128)
    model, data = build_from_checkpoint(tmp_path / "zoo.pt", plugins=build_plugins(autoload=False))
    assert data["classes"] == ["a", "b", "c"] and not model.training
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ZooError, match="junk.pt' is corrupt"):
        load_weights(info.build(2), tmp_path / "junk.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ZooError, match="No tensor"):
        load_weights(info.build(2), tmp_path / "other.pt")
