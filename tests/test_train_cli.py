"""`zoo train` through the real CLI and a real SQLite registry, on tiny generated images."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest

from zoo.store import Registry

FAST = ("--epochs", "2", "--image-size", "16", "--batch-size", "8")


def registry() -> Registry:
    return Registry.open(os.environ["ZOO_REGISTRY"])


def runs(reg: Registry):
    from sqlalchemy import text

    with reg.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM runs ORDER BY id"))]
    return [reg.get_run(i) for i in ids]


def no_runs_recorded() -> bool:
    path = Path(os.environ["ZOO_REGISTRY"])
    return not path.exists() or not runs(registry())


def test_train_records_everything(cli, make_images):
    data = make_images({"cat": 10, "dog": 10}, size=20)
    result = cli("train", "tinycnn", "--data", data, *FAST, "--name", "first", "--tag", "purpose=test",
                 "--tag", "size=tiny", "--lr", "0.01")
    assert result.exit_code == 0, result.output
    assert "tinycnn epoch 2/2" in result.output and "Trained in this command" in result.output
    (run,) = runs(registry())
    assert run.status == "completed" and run.stop_reason == "max_epochs" and run.epochs_run == 2
    assert run.name == "first" and run.tags == {"purpose": "test", "size": "tiny"}
    assert run.model == "tinycnn" and run.plugin == "tinycnn" and run.device == "cpu"
    assert run.params["image_size"] == 16 and run.params["lr"] == 0.01 and run.params["precision"] == "fp32"
    assert run.params["data"] == str(data.resolve()) and run.params["split"] == "8:1:1"
    assert set(run.params) >= {"epochs", "batch_size", "momentum", "weight_decay", "patience", "min_delta", "seed",
                               "pretrained", "weights", "workers", "compile", "strict", "device"}
    assert (run.train_size, run.val_size, run.test_size) == (16, 2, 2) and run.classes == ["cat", "dog"]
    assert len(run.dataset_fingerprint) == 16 and len(run.split_fingerprint) == 16
    history = registry().history(run.id)
    assert set(history) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_sec"}
    assert [e for e, _ in history["val_loss"]] == [1, 2]
    assert 0 <= run.metrics["test_accuracy"] <= 1 and "test_f1/cat" in run.metrics and "test_loss" in run.metrics
    assert sum(map(sum, run.confusion)) == 2
    import torch

    checkpoint = torch.load(run.checkpoint, weights_only=True)
    assert checkpoint["format"] == "zoo-checkpoint" and checkpoint["epoch"] == run.best_epoch
    assert Path(run.checkpoint).is_absolute()


@pytest.mark.slow
def test_alexnet_and_resnet18_share_one_split(cli, make_images):
    data = make_images({"cat": 8, "dog": 8}, size=24)
    result = cli("train", "alexnet", "resnet18", "--data", data, "--epochs", "2", "--image-size", "64",
                 "--batch-size", "8", "--quiet")
    assert result.exit_code == 0, result.output
    alexnet, resnet18 = runs(registry())
    assert (alexnet.model, resnet18.model) == ("alexnet", "resnet18")
    assert alexnet.split_fingerprint == resnet18.split_fingerprint
    assert alexnet.dataset_fingerprint == resnet18.dataset_fingerprint
    for run in (alexnet, resnet18):
        assert run.status == "completed" and run.epochs_run == 2 and run.params["image_size"] == 64
        assert [e for e, _ in registry().history(run.id)["train_loss"]] == [1, 2]
        assert "test_accuracy" in run.metrics and "test_f1" in run.metrics
    assert "epoch 1/2" not in result.output  # --quiet: only the final table
    assert result.output.index("alexnet") != result.output.index("resnet18")


@pytest.mark.parametrize("args, message", [
    (("tinycnnn", "--data", "DATA"), "Unknown model 'tinycnnn'. Did you mean: tinycnn"),
    (("tinycnn", "--data", "DATA", "--image-size", "8"), "below tinycnn's minimum of 16 px"),
    (("alexnet", "--data", "DATA", "--image-size", "32"), "below alexnet's minimum of 63 px"),
    (("tinycnn", "--data", "MISSING"), "does not exist"),
    (("tinycnn", "--data", "DATA", "--split", "1:1"), "three positive ratios"),
    (("tinycnn", "--data", "DATA", "--split", "1:1:20"), "needs at least one image per class"),
    (("tinycnn", "--data", "DATA", "--device", "gpu"), "not a device"),
    (("tinycnn", "--data", "DATA", "--tag", "oops"), "key=value"),
    (("tinycnn", "--data", "DATA", "--pretrained"), "no pretrained weights"),
    (("tinycnn", "--data", "DATA", "--weights", "MISSING"), "does not exist"),
    (("tinycnn",), "--data is required"),
])
def test_bad_input_is_one_line_and_records_nothing(cli, make_images, tmp_path, args, message):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    args = [str(data) if a == "DATA" else str(tmp_path / "missing") if a == "MISSING" else a for a in args]
    result = cli("train", *args)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert no_runs_recorded()


@pytest.mark.parametrize("layout, message", [
    ({"cat": 4}, "at least two class"),
    ({"cat": 4, "dog": 0}, "is empty"),
    ({"cat": 4, "dog": 2}, "has only 2 image"),
])
def test_bad_folders_through_the_cli(cli, tmp_path, layout, message):
    from conftest import write_images

    root = write_images(tmp_path / "data", {k: v for k, v in layout.items() if v}, size=16)
    for cls in layout:
        (root / cls).mkdir(exist_ok=True)
    result = cli("train", "tinycnn", "--data", root, *FAST)
    assert result.exit_code == 1 and message in " ".join(result.output.split())
    assert no_runs_recorded()


def test_corrupt_files_warned_and_skipped_or_refused_with_strict(cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = cli("train", "tinycnn", "--data", data, *FAST, "--strict")
    assert result.exit_code == 1 and "dog/broken.jpg" in result.output and no_runs_recorded()
    result = cli("train", "tinycnn", "--data", data, *FAST)
    assert result.exit_code == 0, result.output
    assert "Skipping 1 file" in result.output and "dog/broken.jpg" in result.output
    (run,) = runs(registry())
    assert run.status == "completed" and run.train_size + run.val_size + run.test_size == 12


def test_ctrl_c_marks_the_run_interrupted_and_exits_130(cli, make_images, monkeypatch):
    from zoo.cli import train as train_cli

    real_line = train_cli.Display.line

    def line(self, text):  # Ctrl-C right after epoch 2 is recorded
        real_line(self, text)
        if "epoch 2/" in text:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_cli.Display, "line", line)
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "tinycnn", "--data", data, "--epochs", "5", "--image-size", "16")
    assert result.exit_code == 130
    assert "interrupted" in result.output
    (run,) = runs(registry())  # the command stopped: no second run
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and run.epochs_run == 2
    assert [e for e, _ in registry().history(run.id)["val_loss"]] == [1, 2]
    assert run.checkpoint and Path(run.checkpoint).is_file() and run.best_epoch in (1, 2)


def test_nan_loss_run_is_failed_with_its_reason(cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "--data", data, *FAST, "--lr", "inf")
    assert result.exit_code == 1 and "failed" in result.output and "--lr" in result.output
    (run,) = runs(registry())
    assert run.status == "failed" and run.stop_reason == "nan_loss" and "loss" in run.error


def test_an_exception_marks_the_run_failed(cli, make_images, monkeypatch):
    import zoo.engine

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (test)")

    monkeypatch.setattr(zoo.engine, "train", broken)
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "--data", data, *FAST)
    assert result.exit_code == 1 and "CUDA out of memory (test)" in result.output
    assert "Traceback" not in result.output
    (run,) = runs(registry())
    assert run.status == "failed" and run.stop_reason == "error" and "out of memory" in run.error


def test_weights_with_a_mismatched_head(cli, make_images):
    three = make_images({"cat": 6, "dog": 6, "fox": 6}, size=16)
    assert cli("train", "tinycnn", "--data", three, *FAST).exit_code == 0
    (first,) = runs(registry())
    two = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "--data", two, *FAST, "--weights", first.checkpoint)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Skipped 2 tensor(s)" in out and "6.weight (3x128 in the file, 2x128 in tinycnn)" in out
    second = runs(registry())[1]
    assert second.status == "completed" and second.params["weights"] == first.checkpoint


def test_pretrained_offline_message(cli, make_images, tmp_path, monkeypatch):
    import torch.hub

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "resnet18", "--data", data, "--pretrained", "--image-size", "32")
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "'resnet18'" in out and "--weights FILE" in out
    assert str(home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in out
    assert no_runs_recorded()


def test_from_reproduces_params_and_command_line_overrides(cli, make_images):
    data = make_images({"cat": 8, "dog": 8}, size=16)
    first = cli("train", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "20", "--batch-size", "4",
                "--lr", "0.02", "--seed", "3", "--split", "2:1:1", "--patience", "2", "--momentum", "0.5")
    assert first.exit_code == 0, first.output
    again = cli("train", "--from", "1")
    assert again.exit_code == 0, again.output
    varied = cli("train", "--from", "1", "--lr", "0.05", "--epochs", "2")
    assert varied.exit_code == 0, varied.output
    one, two, three = runs(registry())
    assert two.model == "tinycnn" and two.params == one.params
    assert two.split_fingerprint == one.split_fingerprint
    assert {k for k in one.params if one.params[k] != three.params[k]} == {"lr", "epochs"}
    assert three.params["lr"] == 0.05 and three.params["seed"] == 3 and three.params["image_size"] == 20
    assert cli("train", "--from", "99").exit_code == 1


def test_streaming_from_disk_when_over_the_memory_budget(cli, make_images, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")  # nothing fits: DataLoader workers read the files every epoch
    data = make_images({"cat": 6, "dog": 6}, size=20)
    result = cli("train", "tinycnn", "--data", data, *FAST, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "streamed from disk" in result.output
    (run,) = runs(registry())
    assert run.status == "completed" and run.epochs_run == 2 and "test_accuracy" in run.metrics
