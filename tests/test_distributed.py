"""Training under torchrun (zoo.distributed): DDP on CPUs with gloo, rank 0 records the run, each rank trains a
disjoint share of every epoch, val/test counts are summed over the ranks, a crash on any rank ends every rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.distributed import ENV, NullRegistry, World, check_device, from_env
from zoo.errors import ZooError
from zoo.store import Registry

FAST = ("--epochs", "2", "--image-size", "16", "--batch-size", "8")


def torchrun(*args, plugins: Path | None = None, logs: Path | None = None, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 -m zoo train ARGS`` (a free port: other tests may run it too).
    With ``logs``, each rank's stdout and stderr go to files under that folder (``rank_output`` reads them), so
    two ranks printing at once cannot interleave inside one message."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ENV + ("MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    if plugins is not None:
        env.update(ZOO_PLUGINS_DIR=str(plugins), ZOO_DISABLE_PLUGIN_AUTOLOAD="0")
    redirect = ["--log-dir", str(logs), "--redirects", "3"] if logs is not None else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *redirect,
               "-m", "zoo", "train", *map(str, args)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(child: subprocess.Popen, timeout: float = 150) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
        pytest.fail(f"torchrun still running after {timeout} s (a rank hangs):\n{out[-3000:]}")
    return child.returncode, out, time.monotonic() - started


def rank_output(logs: Path, rank: int) -> str:
    """What local rank ``rank`` printed (stdout, then stderr) in a torchrun started with ``logs``."""
    files = sorted(logs.glob(f"**/attempt_*/{rank}/stdout.log")) + sorted(logs.glob(f"**/attempt_*/{rank}/stderr.log"))
    assert files, f"no log files for rank {rank} under {logs}"
    return "".join(f.read_text(errors="replace") for f in files)


def recorded_runs() -> list:
    reg = Registry.open(os.environ["ZOO_REGISTRY"])
    from sqlalchemy import text

    with reg.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM runs ORDER BY id"))]
    return [reg.get_run(i) for i in ids]


# ------------------------------------------------------------------------------------------ the real thing


def test_two_ranks_train_one_run_on_the_whole_split(make_images, cli):
    # 41 images: train 33 (odd: one image sits out each epoch), val 5 and test 5 (odd: the ranks' shares differ)
    data = make_images({"cat": 15, "dog": 15, "fox": 13}, size=20)
    code, out, _ = finish(torchrun("tinycnn", "--data", data, *FAST))
    assert code == 0, out[-3000:]
    assert out.count("tinycnn epoch 2/2") == 1, out  # only rank 0 prints progress
    (run,) = recorded_runs()  # only rank 0 records
    assert run.status == "completed" and run.epochs_run == 2 and run.device == "cpu"
    assert (run.train_size, run.val_size, run.test_size) == (33, 5, 5)
    assert run.params["world_size"] == 2 and run.params["dist_backend"] == "gloo"
    assert run.params["batch_size"] == run.params["per_rank_batch_size"] == 8 and run.params["global_batch_size"] == 16
    assert sum(map(sum, run.confusion)) == run.test_size  # every test image counted once, over both ranks
    assert run.metrics["test_accuracy"] == pytest.approx(sum(run.confusion[i][i] for i in range(3)) / 5)
    assert Path(run.checkpoint).is_file() and [p.name for p in Path(run.checkpoint).parent.iterdir()] == ["best.pt"]

    single = cli("train", "tinycnn", "--data", data, *FAST)
    assert single.exit_code == 0, single.output
    first, second = recorded_runs()
    assert "world_size" not in second.params  # a single process records no world
    assert second.split_fingerprint == first.split_fingerprint
    assert second.dataset_fingerprint == first.dataset_fingerprint
    assert second.test_size == sum(map(sum, second.confusion)) == 5

    from zoo.store.comparisons import predictions  # issue 19: paired comparisons need every rank's test images

    with Registry.open(os.environ["ZOO_REGISTRY"]).connect() as conn:
        made = predictions(conn, [first.id, second.id])
    ranks, alone = made[first.id], made[second.id]
    assert len(ranks) == 5 and (ranks.index, ranks.true) == (alone.index, alone.true)  # the same images, in order
    tally = [[0] * 3 for _ in range(3)]
    for true, pred in zip(ranks.true, ranks.pred):
        tally[true][pred] += 1
    assert tally == first.confusion  # each prediction sits at its own image's place, whichever rank made it


CRASHY = '''
import os

import zoo

CRASH = True


def build(*, num_classes, pretrained=False):
    from torch import nn

    class Crashy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
            self.steps = 0

        def forward(self, x):
            self.steps += self.training
            if CRASH and self.steps == 2 and os.environ["RANK"] == "1":  # rank 0 waits in the all-reduce
                raise RuntimeError("crashy broke on rank 1")
            return self.body(x)

    return Crashy()


@zoo.hookimpl
def register_models(register):
    register("crashy", build, min_size=8, default_size=16, pretrained=False)
'''


def crashy_plugins(folder: Path, crash: bool = True) -> Path:
    """A plugin folder with 'crashy', whose forward raises in the second training step on rank 1 (if ``crash``)."""
    plugins = folder / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "crashy.py").write_text(CRASHY.replace("CRASH = True", f"CRASH = {crash}"))
    return plugins


def test_a_grid_under_torchrun_and_a_crash_on_rank_1(make_images, tmp_path):
    """One process group for the whole command: tinycnn x 2 lrs trains, then crashy breaks on rank 1: its run is
    recorded failed with rank 1's error, both ranks end, the last planned run is never started."""
    data = make_images({"cat": 15, "dog": 15}, size=20)
    logs = tmp_path / "logs"
    code, out, seconds = finish(torchrun("tinycnn", "crashy", "--data", data, "--epochs", "1", "--image-size", "16",
                                         "--batch-size", "8", "--lr", "0.05,0.01", plugins=crashy_plugins(tmp_path),
                                         logs=logs), timeout=120)  # the timeout: a rank that hangs
    out += rank_output(logs, 0)
    assert code != 0, out[-3000:]
    runs = recorded_runs()
    assert [(r.model, r.params["lr"], r.status) for r in runs] == [
        ("tinycnn", 0.05, "completed"), ("tinycnn", 0.01, "completed"), ("crashy", 0.05, "failed")]
    assert all(r.params["world_size"] == 2 for r in runs) and len({r.group for r in runs}) == 1
    assert all(sum(map(sum, r.confusion)) == r.test_size for r in runs[:2])
    crashed = runs[2]
    assert crashed.stop_reason == "error" and crashed.error == "rank 1: RuntimeError: crashy broke on rank 1"
    # rank 0's own output: rank 1's error line, printed at the same moment, must not be able to split the message
    said = " ".join(rank_output(logs, 0).split())
    assert "1 run(s) not started: under torchrun a crash on any rank ends the command" in said, said[-3000:]
    assert "rank 1: RuntimeError: crashy broke on rank 1" in rank_output(logs, 1)


@pytest.mark.slow
def test_sigterm_to_torchrun_records_the_run_interrupted(make_images):
    data = make_images({"cat": 15, "dog": 15}, size=20)
    child = torchrun("tinycnn", "--data", data, "--epochs", "500", "--patience", "500", "--image-size", "16",
                     "--batch-size", "8")
    seen = []
    for line in child.stdout:  # rank 0's progress: signal once an epoch has been recorded
        seen.append(line)
        if "tinycnn epoch   2/500" in line:
            child.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail("".join(seen)[-3000:])
    code, out, _ = finish(child, timeout=60)  # the timeout: a rank that does not stop
    assert code != 0, out[-3000:]
    (run,) = recorded_runs()
    assert run.status == "interrupted" and run.stop_reason == "interrupted" and run.error == "Terminated (SIGTERM)."
    assert run.epochs_run >= 2


# --------------------------------------------------------------------------------------------- the parts


def test_shares_are_disjoint_equal_and_cover_the_split():
    for n in range(0, 14):
        for size in (1, 2, 3, 4):
            worlds = [World(rank, size, rank, launched=size > 1) for rank in range(size)]
            train = [list(range(n))[w.train_share(n)] for w in worlds]
            assert all(len(t) == n // size for t in train)  # the same number of batches on every rank
            assert sorted(sum(train, [])) == list(range((n // size) * size))
            evals = [list(range(n))[w.eval_share(n)] for w in worlds]
            assert sorted(sum(evals, [])) == list(range(n))  # every val/test image once


def test_each_rank_trains_its_share_of_the_single_process_epoch(make_images):
    """Same seed on every rank: rank r's images, crops and flips are positions r, r+2, ... of one epoch."""
    import torch

    from zoo.data import load_images, make_pipeline, split_samples

    images = load_images(make_images({"cat": 10, "dog": 10}, size=20), image_sizes=[16])
    split = split_samples(images, (8, 1, 1), 42)
    assert len(split.train) == 16

    def epoch(world=None, part=None):
        pipe = make_pipeline(images, split, image_size=16, batch_size=4, device="cpu", world=world)
        batches = list(pipe.train_epoch(torch.Generator().manual_seed(3)) if part is None
                       else pipe.eval_batches(part))
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    whole_x, whole_y = epoch()
    assert len(whole_y) == 16
    for rank in (0, 1):
        x, y = epoch(World(rank, 2, rank, launched=True))
        assert len(y) == 8 and torch.equal(y, whole_y[rank::2]) and torch.allclose(x, whole_x[rank::2])
    for part in ("val", "test"):
        whole_x, whole_y = epoch(part=part)
        shares = [epoch(World(rank, 2, rank, launched=True), part) for rank in (0, 1)]
        assert torch.equal(torch.cat([y for _, y in shares]).sort().values, whole_y.sort().values)
        assert torch.equal(shares[1][1], whole_y[1::2]) and torch.allclose(shares[1][0], whole_x[1::2])


def test_world_from_the_torchrun_environment():
    assert from_env({}) == World() and not World().launched and World().params(32, "cpu") == {}
    assert from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(1, 4, 1, launched=True)
    assert World(0, 4, 0, True).params(32, "cuda:0") == {"world_size": 4, "per_rank_batch_size": 32,
                                                          "global_batch_size": 128, "dist_backend": "nccl"}
    with pytest.raises(ZooError, match="RANK set but not WORLD_SIZE, LOCAL_RANK: start distributed training"):
        from_env({"RANK": "0"})
    with pytest.raises(ZooError, match="whole numbers"):
        from_env({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ZooError, match="need 0 <= RANK < WORLD_SIZE"):
        from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_under_torchrun_each_rank_keeps_to_its_own_gpu_or_the_cpu(monkeypatch):
    import torch

    import zoo.distributed

    check_device(torch.device("cuda", 1), "cuda:1")  # no torchrun: any device
    monkeypatch.setattr(zoo.distributed, "_current", World(0, 2, 0, launched=True))
    check_device(torch.device("cpu"), "cpu")
    check_device(torch.device("cuda", 0), "auto")
    with pytest.raises(ZooError, match=r"--device cuda:1: under torchrun each process uses its own GPU"):
        check_device(torch.device("cuda", 1), "cuda:1")
    with pytest.raises(ZooError, match="--device mps: torchrun training runs on CUDA GPUs"):
        check_device(torch.device("mps"), "mps")


def test_other_ranks_record_nothing(make_images, monkeypatch):
    """A rank other than 0 runs the same session against a NullRegistry, with no checkpoint path."""
    from zoo.engine import TrainResult
    from zoo.spec import RunSpec
    from zoo.training import Session, make_plan
    from zoo.vocab import Status, StopReason

    data = make_images({"cat": 10, "dog": 10}, size=20)
    plan = make_plan([RunSpec(model="tinycnn", data=str(data), epochs=1, image_size=16)], None)
    contexts = []

    def fake_train(ctx):
        contexts.append(ctx)
        return TrainResult(Status.COMPLETED, StopReason.MAX_EPOCHS, 1, 1, None)

    result = Session(plan, NullRegistry(), train_fn=fake_train, world=World(1, 2, 1)).run()
    assert [o.status for o in result.outcomes] == [Status.COMPLETED] and contexts[0].checkpoint is None
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()


class DictStore:
    """torchrun's key-value store, as the mailbox uses it."""

    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode() if isinstance(value, str) else value

    def check(self, keys):
        return all(k in self.data for k in keys)

    def get(self, key):
        return self.data[key]


def test_rank_0_records_the_rank_that_caused_the_end(monkeypatch):
    """settle: a peer's crash wins over this rank's echo of it (a lost connection, torchrun's SIGTERM)."""
    import zoo.distributed as d
    from zoo.vocab import Status

    store = DictStore()
    monkeypatch.setattr(d, "_store", d.Mailbox(store))
    monkeypatch.setattr(d, "_shield", lambda: None)  # the real one ignores Ctrl-C in this process
    monkeypatch.setattr(d, "ECHO_WAIT", 0.05)
    main, peer = World(0, 2, 0, launched=True), World(1, 2, 1, launched=True)
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:41234")

    # rank 1 crashed and posted first; rank 0's own error is the echo
    assert peer.settle("run1", Status.FAILED, "RuntimeError: boom", RuntimeError("boom")) == (Status.FAILED,
                                                                                                 "RuntimeError: boom")
    assert main.settle("run1", Status.FAILED, f"RuntimeError: {lost}", lost) == (Status.FAILED,
                                                                                 "rank 1: RuntimeError: boom")
    from zoo.training.session import Terminated

    assert main.settle("run1", Status.INTERRUPTED, "Terminated (SIGTERM).", Terminated()) == (
        Status.FAILED, "rank 1: RuntimeError: boom")
    # this rank's own crash is its own, whatever the others say
    assert main.settle("run1", Status.FAILED, "ValueError: mine", ValueError("mine")) == (Status.FAILED,
                                                                                         "ValueError: mine")
    # rank 1 stopped by a signal of its own: rank 0 lost it in a collective, the run was interrupted
    peer.settle("run2", Status.INTERRUPTED, "Terminated (SIGTERM).", Terminated())
    assert main.settle("run2", Status.FAILED, f"RuntimeError: {lost}", lost) == (
        Status.INTERRUPTED, "rank 1: Terminated (SIGTERM).")
    # everyone got Ctrl-C: rank 0's own interruption
    assert main.settle("run2", Status.INTERRUPTED, None, KeyboardInterrupt()) == (Status.INTERRUPTED, None)
    # rank 1 died without a word (kill -9): rank 0 records what it saw
    assert main.settle("run3", Status.FAILED, "RuntimeError: lost", lost) == (Status.FAILED, "RuntimeError: lost")
    assert set(store.data) == {f"zoo/attempt0/run{i}/rank{r}" for i, r in
                               [(1, 1), (1, 0), (2, 1), (2, 0), (3, 0)]}
    assert World().settle("run1", Status.FAILED, "x", lost) == (Status.FAILED, "x")  # no torchrun: as given


def test_queue_is_refused_under_torchrun(cli, make_images, monkeypatch):
    data = make_images({"cat": 10, "dog": 10}, size=20)
    for name, value in zip(ENV, ("0", "2", "0")):
        monkeypatch.setenv(name, value)
    result = cli("train", "tinycnn", "--data", data, "--queue")
    assert result.exit_code == 1 and "--queue only records runs for `zoo worker`: run it without torchrun" in \
        " ".join(result.output.split())
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()
