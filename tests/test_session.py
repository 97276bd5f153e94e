"""The training service: each run's recorded end whatever stops it, keep going, one decode, grids and groups."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from zoo.engine import TrainResult
from zoo.spec import RunSpec
from zoo.store import Registry
from zoo.training import Session, make_plan
from zoo.vocab import Status, StopReason


def registry() -> Registry:
    return Registry.open(os.environ["ZOO_REGISTRY"])


def statuses(reg) -> list[tuple[str, str]]:
    from zoo.store import queries

    with reg.connect() as conn:
        runs, _ = queries.list_runs(conn, queries.RunFilter(), limit=None, host=reg.host)
    return [(r.status, r.stop_reason) for r in reversed(runs)]


@pytest.fixture
def planned(make_images):
    """A registry and a 3-run plan of tinycnn (seeds 1, 2, 3) on a tiny folder."""
    data = make_images({"cat": 6, "dog": 6}, size=16)
    reg = registry()
    specs = [RunSpec("tinycnn", str(data), seed=seed, image_size=16, epochs=1) for seed in (1, 2, 3)]
    yield reg, make_plan(specs, reg)
    reg.close()


def fake_train(fail_on: int, error: BaseException):
    """A train function that logs one epoch, then raises ``error`` in the run of seed ``fail_on``."""

    def train_fn(ctx):
        from zoo.engine import CallbackList, EpochStats

        logs = EpochStats(1.0, 0.5, 1.0, 0.5, 0.1, 0.01, 100.0).as_row()
        CallbackList(ctx.callbacks).call("on_epoch_end", None, 1, {**logs, "improved": True})
        if ctx.planned.spec.seed == fail_on:
            raise error
        return TrainResult(Status.COMPLETED, StopReason.MAX_EPOCHS, 1, 1, None, metrics={"test_accuracy": 0.5})

    return train_fn


def test_an_exception_fails_that_run_and_the_session_goes_on(planned):
    reg, plan = planned
    result = Session(plan, reg, train_fn=fake_train(2, RuntimeError("CUDA out of memory (test)"))).run()
    assert statuses(reg) == [("completed", "max_epochs"), ("failed", "error"), ("completed", "max_epochs")]
    assert result.exit_code == 1 and [o.error for o in result.failed] == ["RuntimeError: CUDA out of memory (test)"]
    assert reg.get_run(2).error == "RuntimeError: CUDA out of memory (test)" and reg.get_run(2).epochs_run == 1


def test_a_pruned_run_is_recorded_pruned_with_its_history_and_the_session_goes_on(planned):
    """A callback's StopTraining("pruned", status=pruned) ends the engine's run 'pruned' (zoo tune's pruning)."""
    from zoo.engine import CallbackList, EpochStats, StopTraining

    def train_fn(ctx):  # as the engine does: the epoch's callbacks, then the stop one of them raised
        prune = ctx.planned.spec.seed == 2

        class Prune:
            def on_epoch_end(self, run, epoch, logs):
                if prune:
                    raise StopTraining("pruned", status=Status.PRUNED, error="lags the others")

        logs = EpochStats(1.0, 0.5, 1.0, 0.5, 0.1, 0.01, 100.0).as_row()
        try:
            CallbackList([*ctx.callbacks, Prune()]).call("on_epoch_end", None, 1, {**logs, "improved": True})
        except StopTraining as stop:
            return TrainResult(stop.status, stop.reason, 1, 1, None, error=stop.error)
        return TrainResult(Status.COMPLETED, StopReason.MAX_EPOCHS, 1, 1, None, metrics={"test_accuracy": 0.5})

    reg, plan = planned
    result = Session(plan, reg, train_fn=train_fn, fail_fast=True).run()
    assert statuses(reg) == [("completed", "max_epochs"), ("pruned", "pruned"), ("completed", "max_epochs")]
    assert result.exit_code == 0 and not result.failed
    run = reg.get_run(2)
    assert run.display_status == "pruned" and run.error == "lags the others" and run.epochs_run == 1
    assert [epoch for epoch, _ in reg.history(2, ["val_loss"])["val_loss"]] == [1]


def test_fail_fast_stops_after_the_first_failure(planned):
    reg, plan = planned
    result = Session(plan, reg, train_fn=fake_train(2, ValueError("bad")), fail_fast=True).run()
    assert statuses(reg) == [("completed", "max_epochs"), ("failed", "error")]
    assert result.skipped == 1 and result.exit_code == 1


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_record_the_run_interrupted_and_stop_the_session(planned, error, code):
    reg, plan = planned
    if error == "SIGTERM":
        class Kill(Exception):
            pass

        def train_fn(ctx):
            if ctx.planned.spec.seed == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # the session's handler raises Terminated here
            return fake_train(0, Kill())(ctx)
    else:
        train_fn = fake_train(2, error)
    before = signal.getsignal(signal.SIGTERM)
    result = Session(plan, reg, train_fn=train_fn).run()
    assert statuses(reg) == [("completed", "max_epochs"), ("interrupted", "interrupted")]
    assert result.exit_code == code and result.skipped == 1
    assert signal.getsignal(signal.SIGTERM) is before
    if code == 143:
        assert reg.get_run(2).error == "Terminated (SIGTERM)."


def test_system_exit_is_recorded_and_re_raised(planned):
    reg, plan = planned
    with pytest.raises(SystemExit):
        Session(plan, reg, train_fn=fake_train(1, SystemExit(1))).run()
    assert statuses(reg) == [("interrupted", "interrupted")]
    assert reg.get_run(1).error.startswith("Stopped: ")


def test_images_are_decoded_once_for_every_run(planned):
    reg, plan = planned
    session = Session(plan, reg, train_fn=fake_train(0, RuntimeError()))
    session.run()
    assert session.decodes == 1 and len(statuses(reg)) == 3


# ------------------------------------------------------------------------------ through the CLI, real training


def test_a_3x2_grid_trains_6_runs_in_one_group_decoding_once(cli, monkeypatch):
    import zoo.data.load

    calls = []
    real = zoo.data.load.decode_image
    monkeypatch.setattr(zoo.data.load, "decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    result = cli("train", "tinycnn", "--data", "demo", "--epochs", "1", "--image-size", "16", "--lr", "0.1,0.01,0.05",
                 "--batch-size", "32", "--batch-size", "64", "-q")
    assert result.exit_code == 0, result.output
    assert len(calls) == len(set(calls)) == 900  # every demo image decoded once, for all 6 runs
    reg = registry()
    from zoo.store import queries

    with reg.connect() as conn:
        runs, total = queries.list_runs(conn, queries.RunFilter(), limit=None, host=reg.host)
    runs = [reg.get_run(r.id) for r in runs]
    assert total == 6 and len({r.group for r in runs}) == 1 and runs[0].group
    assert {(r.params["lr"], r.params["batch_size"]) for r in runs} == {(lr, bs) for lr in (0.1, 0.01, 0.05)
                                                                       for bs in (32, 64)}
    assert len({r.split_fingerprint for r in runs}) == 1
    group = runs[0].group
    listed = cli("list-runs", "--group", group, "--format", "json")
    assert len(__import__("json").loads(listed.output)) == 6
    assert "No runs match" in cli("list-runs", "--group", "nope").output
    by_lr = cli("compare", "--group", group, "--by", "lr", "--format", "json")
    records = __import__("json").loads(by_lr.output)
    assert by_lr.exit_code == 0 and len(records) == 3  # the best run of each lr
    assert cli("compare", "--by", "learning_rate").exit_code == 1
    shown = cli("show", str(runs[0].id))
    assert f"group" in shown.output and group in shown.output


def test_dry_run_prints_the_plan_and_records_nothing(cli, make_images, tmp_path):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "--data", data, "--seed", "1,2,3", "--lr", "0.1,0.2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Plan: 6 runs" in result.output and "seed" in result.output and "lr" in result.output
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()
    bad = cli("train", "tinycnn", "--data", data, "--lr", "0.1,abc")
    assert bad.exit_code == 1 and "--lr 'abc': not a number" in bad.output


def test_a_failing_model_between_two_good_ones(cli, make_images, tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "crashnet.py").write_text(
        "import zoo\n\n"
        "def build(num_classes, pretrained=False):\n"
        "    raise RuntimeError('crashnet is broken (test)')\n\n"
        "@zoo.hookimpl\n"
        "def register_models(register):\n"
        "    register('crashnet', build, min_size=8, default_size=16)\n"
        "    from zoo_builtin_plugins.tinycnn import build_tinycnn\n"
        "    register('othercnn', build_tinycnn, min_size=8, default_size=16)\n")
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(plugins))
    monkeypatch.delenv("ZOO_DISABLE_PLUGIN_AUTOLOAD")
    data = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinycnn", "crashnet", "othercnn", "--data", data, "--epochs", "1", "--image-size", "16",
                 "--seed", "1", "--name", "trio")
    assert result.exit_code == 1
    assert "1 of 3 run(s) failed" in result.output and "crashnet is broken (test)" in result.output
    assert "Traceback" not in result.output
    reg = registry()
    assert statuses(reg) == [("completed", "max_epochs"), ("failed", "error"), ("completed", "max_epochs")]
    # --from keeps the name and tags of the earlier run and records where it came from
    again = cli("train", "--from", "1", "--lr", "0.01")
    assert again.exit_code == 0, again.output
    run = reg.get_run(4)
    assert run.name == "trio" and run.parent == 1 and run.params["lr"] == 0.01 and run.params["seed"] == 1
    assert "from run 1" in cli("show", "4").output
    assert __import__("json").loads(cli("show", "4", "--format", "json").output)["from_run"] == 1


def test_a_loader_worker_stopped_by_sigterm_is_a_typed_interruption(make_images, monkeypatch):
    """The worker's exit code, not torch's message, tells a stop signal from a crash."""
    import multiprocessing

    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.errors import LoaderStopped
    from zoo.training.session import Terminated, stopped_by_signal

    monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")  # stream from disk through a worker process
    root = make_images({"cat": 12, "dog": 12}, size=24)
    images = load_images(root, image_sizes=[16])
    pipe = make_pipeline(images, split_samples(images, (4, 1, 1), 42), image_size=16, batch_size=2, device="cpu",
                         workers=1)
    assert pipe.streaming
    import torch

    batches = pipe.train_epoch(torch.Generator().manual_seed(0))
    next(batches)
    # torch's SIGCHLD handler would raise its RuntimeError at whatever line the main thread is on when the worker
    # dies (even inside pytest's reporting); without it the death is found where zoo looks: by the loader's own
    # liveness check inside next(), within its 5 s status interval. (Default, not ignore: exit codes are kept.)
    torch_handler = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGTERM)
        with pytest.raises(LoaderStopped) as stopped:
            for _ in batches:
                pass
    finally:
        signal.signal(signal.SIGCHLD, torch_handler)
    assert stopped.value.signum == signal.SIGTERM and isinstance(stopped_by_signal(stopped.value), Terminated)
    assert stopped_by_signal(RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")) is None
