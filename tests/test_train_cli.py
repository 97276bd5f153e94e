"""`zoo train` through the real CLI and a real SQLite registry, on tiny generated images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys
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
    assert run.params["image_size"] == 16 and run.params["lr"] == 0.01 and run.params["precision"] == "auto"
    assert run.params["resolved_precision"] == "fp32" and run.params["resolved_device"] == "cpu"
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


def test_ctrl_c_marks_the_run_interrupted_and_exits_130(cli, make_images, ctrl_c_after_epoch):
    ctrl_c_after_epoch(2)  # Ctrl-C right after epoch 2 is recorded
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "tinycnn", "--data", data, "--epochs", "5", "--image-size", "16")
    assert result.exit_code == 130
    assert "interrupted" in result.output
    (run,) = runs(registry())  # the command stopped: no second run
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and run.epochs_run == 2
    assert [e for e, _ in registry().history(run.id)["val_loss"]] == [1, 2]
    assert run.checkpoint and Path(run.checkpoint).is_file() and run.best_epoch in (1, 2)


def test_nan_loss_run_is_failed_with_its_reason(cli, make_images):
    from test_engine import nan_weights
    from zoo.plugins import build_plugins

    data = make_images({"cat": 6, "dog": 6}, size=16)
    weights = nan_weights(build_plugins(autoload=False).models().get("tinycnn"), data.parent / "nan.pt")
    result = cli("train", "tinycnn", "--data", data, *FAST, "--weights", weights)
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
    assert "images, 2 classes" not in out  # the weights are looked for before any image is decoded


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


# ------------------------------------------------------------------ stopping from outside, registry first, markup


def zoo_process(*args: str, **kwargs) -> subprocess.Popen:
    """The real `zoo` entry point in a child process (the environment of the test: its registry, no plugins)."""
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_closed_stdout_records_the_run_interrupted(make_images):
    """`zoo train ... | head -1`: rich exits 1 on the broken pipe; the run must not stay 'running'."""
    data = make_images({"cat": 6, "dog": 6}, size=16)
    child = zoo_process("train", "tinycnn", "--data", data, "--epochs", "200", "--image-size", "16")
    first = child.stdout.readline()  # what `head -1` reads, then it closes the pipe
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=120) == 1 and first.startswith("Data ")
    (run,) = runs(registry())
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and "broken pipe" in run.error
    assert f"Run {run.id} (tinycnn) recorded as interrupted" in err and "Traceback" not in err


def test_sigterm_records_the_run_interrupted_and_exits_143(make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    child = zoo_process("train", "tinycnn", "--data", data, "--epochs", "500", "--image-size", "16")
    for line in child.stdout:
        if "tinycnn epoch" in line:  # the first epoch is recorded: stop it now
            break
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    (run,) = runs(registry())
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and "SIGTERM" in run.error
    assert 1 <= run.epochs_run < 500 and run.checkpoint and Path(run.checkpoint).is_file()
    assert "Terminated: run 1 (tinycnn) recorded as interrupted" in err and "Traceback" not in err
    assert "Trained in this command" in out


def test_sigterm_handler_is_restored_after_train(cli, make_images):
    before = signal.getsignal(signal.SIGTERM)
    data = make_images({"cat": 6, "dog": 6}, size=16)
    assert cli("train", "tinycnn", "--data", data, *FAST).exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("setup, message", [
    ("registry", "is not a SQLite database"),
    ("artifacts", "is a file, not a folder; point ZOO_ARTIFACTS at a folder"),
])
def test_registry_and_artifacts_are_checked_before_the_data(cli, make_images, tmp_path, monkeypatch, setup, message):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    bad = tmp_path / "notdb.txt"
    bad.write_text("not a database\n")
    args = ("--registry", bad) if setup == "registry" else ()
    if setup == "artifacts":
        monkeypatch.setenv("ZOO_ARTIFACTS", str(bad))
    result = cli(*args, "train", "tinycnn", "--data", data, *FAST)
    assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert "Data " not in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert bad.read_text() == "not a database\n" and no_runs_recorded()


def set_params(run_id: int, **values) -> None:
    """Rewrite recorded params in the SQLite file, as a run recorded elsewhere (or by an older zoo) has them."""
    from sqlalchemy import text

    with registry().engine.begin() as conn:
        for key, value in values.items():
            conn.execute(text("DELETE FROM params WHERE run_id = :r AND key = :k"), {"r": run_id, "k": key})
            if value is not None:
                conn.execute(text("INSERT INTO params (run_id, key, value) VALUES (:r, :k, :v)"),
                             {"r": run_id, "k": key, "v": json.dumps(value)})


def test_from_replays_the_device_as_given_not_as_resolved(cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    assert cli("train", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "16").exit_code == 0
    (gpu,) = runs(registry())
    assert gpu.params["device"] == "auto" and gpu.params["precision"] == "auto" and gpu.device == "cpu"
    assert gpu.params["resolved_device"] == "cpu" and gpu.params["resolved_precision"] == "fp32"
    set_params(gpu.id, resolved_device="cuda:0", resolved_precision="bf16")  # as if trained on a GPU
    again = cli("train", "--from", str(gpu.id))
    assert again.exit_code == 0, again.output
    replay = runs(registry())[1]
    assert replay.status == "completed" and replay.device == "cpu"
    assert (replay.params["device"], replay.params["precision"]) == ("auto", "auto")
    assert (replay.params["resolved_device"], replay.params["resolved_precision"]) == ("cpu", "fp32")
    # options given on the command line still win
    forced = cli("train", "--from", str(gpu.id), "--device", "cpu", "--precision", "bf16")
    assert forced.exit_code == 0, forced.output
    third = runs(registry())[2]
    assert (third.params["device"], third.params["precision"], third.params["resolved_precision"]) == \
        ("cpu", "bf16", "bf16")
    # a run recorded before the split stored the resolved values as device/precision: not replayed
    set_params(gpu.id, device="cuda:0", precision="bf16", resolved_device=None, resolved_precision=None)
    old = cli("train", "--from", str(gpu.id))
    assert old.exit_code == 0, old.output
    fourth = runs(registry())[3]
    assert (fourth.params["device"], fourth.params["precision"], fourth.device) == ("auto", "auto", "cpu")
    shown = cli("show", str(fourth.id))
    assert shown.exit_code == 0 and "resolved_precision" in shown.output and "fp32" in shown.output


@pytest.mark.parametrize("folder", ["wd[/]x", "b[red]", "e :smile: [bold]"])
def test_user_text_is_printed_as_given_never_as_markup(cli, make_images, folder):
    data = make_images({"cat": 6, "dog": 6}, size=16, name=folder)
    result = cli("train", "tinycnn", "--data", data, *FAST)
    assert result.exit_code == 0, result.output
    assert f"Data {data.resolve()}: 12 images" in result.output
    (run,) = runs(registry())
    assert run.params["data"] == str(data.resolve()) and run.status == "completed"


def test_epoch_line_styles_best_with_text_not_markup():
    from zoo.cli.progress import epoch_line
    from zoo.engine import EpochStats

    values = EpochStats(train_loss=0.5, train_acc=0.75, val_loss=float("nan"), val_acc=0.5, lr=0.1,
                        images_per_sec=100.0, seconds=0.25)
    line = epoch_line("m[red]", 3, 10, values, improved=True)
    assert line.plain == ("m[red] epoch  3/10  train loss 0.5000 acc 0.750  val loss nan acc 0.500  100 img/s  "
                          "0.2s  best")
    assert [(line.plain[s.start:s.end], str(s.style)) for s in line.spans] == [("best", "green")]
    assert not epoch_line("m", 1, 1, values, improved=False).spans


def test_sigterm_to_the_process_group_while_streaming_records_interrupted(make_images, monkeypatch):
    """timeout, systemd, Slurm and Kubernetes signal the whole group: the DataLoader workers get SIGTERM too."""
    monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")  # stream from disk through worker processes
    data = make_images({"cat": 20, "dog": 20}, size=32)
    child = zoo_process("train", "tinycnn", "--data", data, "--epochs", "500", "--image-size", "16", "--workers", "2",
                        "--batch-size", "4", start_new_session=True)
    for line in child.stdout:
        if "tinycnn epoch" in line:
            break
    time.sleep(0.3)  # the next epoch's workers are reading images now
    os.killpg(child.pid, signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    (run,) = runs(registry())
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and "SIGTERM" in run.error, run.error
