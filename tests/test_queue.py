"""The queue of runs: `zoo train --queue` records queued runs, `zoo worker` processes claim and train them (each
exactly once), a worker killed with SIGKILL leaves its run stale, and `zoo requeue` puts it back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_cli_runs import assert_one_line_error
from test_postgres import forked
from zoo.spec import RunSpec
from zoo.store import Registry

TINY = ["--image-size", "16", "--batch-size", "8"]


def as_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def worker(registry: str, *args: str, artifacts: Path) -> subprocess.Popen:
    env = dict(os.environ, ZOO_REGISTRY=registry, ZOO_ARTIFACTS=str(artifacts), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "zoo", "worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def claimed_ids(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"^Claimed run (\d+) ", output, re.M)]


def test_train_queue_records_runs_that_rebuild_their_specs(cli, make_images, tmp_path):
    images = make_images({"cat": 6, "dog": 6}, size=20)
    result = cli("train", "tinycnn", "--data", images, "--epochs", "1", "--lr", "0.1,0.01", "--seed", "3",
                 "--name", "sweep", "--tag", "exp=q", "--group", "grid1", "--queue", *TINY)
    assert result.exit_code == 0, result.output
    assert "Queued runs 1-2 (group grid1)" in result.output and "zoo worker" in result.output
    listed = as_json(cli("list-runs", "--status", "queued", "--format", "json"))
    assert [r["id"] for r in listed] == [2, 1] and {r["status"] for r in listed} == {"queued"}
    running = cli("list-runs", "--status", "running", "--format", "json")
    assert running.exit_code == 1 and json.loads(running.stdout) == []  # nothing matched: exit 1
    assert "queued" in cli("list-runs").stdout

    from zoo.training.queue import spec_of

    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        run = reg.get_run(1)
        assert (run.started, run.host, run.pid, run.dataset_path) == (None, None, None, None)
        assert run.params["data"] == str(images.resolve())  # absolute: what every worker must see
        assert run.params["device"] == "auto" and run.params["resolved_device"] is None
        assert run.tags == {"exp": "q"} and run.group == "grid1" and run.name == "sweep"
        claimed = reg.claim_queued()
        assert claimed.id == 1 and reg.get_run(1).status == "running" and reg.get_run(1).pid == os.getpid()
    spec = spec_of(claimed)
    assert isinstance(spec, RunSpec) and (spec.model, spec.lr, spec.seed, spec.epochs) == ("tinycnn", 0.1, 3, 1)
    assert (spec.image_size, spec.batch_size, spec.name, spec.tags) == (16, 8, "sweep", (("exp", "q"),))
    assert spec_of(claimed, device="cpu").device == "cpu"


def test_queue_refuses_bad_input_before_recording_anything(cli, make_images, tmp_path):
    images = make_images({"cat": 6, "dog": 6}, size=20)
    for args, fragment in ((["nosuchnet", "--data", images], "nosuchnet"),
                           (["tinycnn", "--data", tmp_path / "missing"], "does not exist"),
                           (["tinycnn", "--data", images, "--image-size", "1"], "minimum")):
        result = cli("train", *args, "--queue")
        assert result.exit_code == 1 and fragment in result.output, result.output
    listed = cli("list-runs", "--format", "json")
    assert listed.exit_code == 1 or json.loads(listed.stdout) == [], listed.output  # nothing was queued


def test_requeue_takes_only_stale_failed_or_interrupted_runs(cli, tmp_path):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        queued = reg.queue_run(model="tinycnn", plugin="tinycnn", params={"data": "demo"})
        done = reg.start_run(model="tinycnn", plugin="tinycnn", params={})
        reg.log_epoch(done, 1, {"train_loss": 1.0})
        reg.finish_run(done, "completed")
        alive = reg.start_run(model="tinycnn", plugin="tinycnn", params={})  # this process: alive
        failed = reg.start_run(model="tinycnn", plugin="tinycnn", params={"lr": 0.1})
        reg.log_epoch(failed, 1, {"train_loss": 1.0})
        reg.log_metrics(failed, {"test_accuracy": 0.1})
        reg.finish_run(failed, "failed", error="boom")
    for run, fragment in ((queued, "already queued"), (done, "is completed"), (alive, "is running"),
                          (99, "No run '99'")):
        result = cli("requeue", run)
        assert result.exit_code == 1 and fragment in result.output, result.output
    result = cli("requeue", failed)
    assert result.exit_code == 0 and f"Run {failed} is queued again" in result.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        run = reg.get_run(failed)
        assert (run.status, run.error, run.pid, run.metrics, run.params) == ("queued", None, None, {}, {"lr": 0.1})
        assert reg.history(failed) == {}


def claim_all(url: str, go: Path, out: Path) -> None:
    """One claiming process: claims queued runs until none is left, writing "id n" lines to ``out``."""
    reg = Registry.open(url)
    while not go.exists():
        time.sleep(0.005)
    with open(out, "w") as handle:
        while (claimed := reg.claim_queued()) is not None:
            handle.write(f"{claimed.id} {claimed.params['n']}\n")
    reg.close()


def test_concurrent_claims_never_share_a_run(registry_location, tmp_path):
    with Registry.open(registry_location) as reg:
        ids = [reg.queue_run(model="m", plugin="p", params={"n": n}) for n in range(40)]
    go, outs = tmp_path / "go", [tmp_path / f"claims{i}" for i in range(4)]
    procs = [forked(claim_all, registry_location, go, out) for out in outs]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    claims = [tuple(map(int, line.split())) for out in outs for line in out.read_text().splitlines()]
    assert sorted(claims) == [(run_id, n) for n, run_id in enumerate(ids)]  # every run once, with its own params
    with Registry.open(registry_location, readonly=True) as reg:
        assert {reg.get_run(i).status for i in ids} == {"running"}


def test_two_workers_drain_six_queued_runs_each_trained_once(cli, pg_url, make_images, tmp_path, monkeypatch):
    artifacts = tmp_path / "shared-artifacts"
    monkeypatch.setenv("ZOO_ARTIFACTS", str(artifacts))
    images = make_images({"cat": 6, "dog": 6}, size=20)
    queued = cli("--registry", pg_url, "train", "tinycnn", "--data", images, "--epochs", "1", "--seed", "1,2,3",
                 "--lr", "0.1,0.05", "--queue", *TINY)
    assert queued.exit_code == 0, queued.output
    workers = [worker(pg_url, artifacts=artifacts) for _ in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    claims = [claimed_ids(out) for out, _ in outputs]
    assert sorted(claims[0] + claims[1]) == [1, 2, 3, 4, 5, 6]  # each run claimed by exactly one worker, once
    with Registry.open(pg_url, readonly=True) as reg:
        runs = [reg.get_run(i) for i in range(1, 7)]
        for run in runs:
            owner = workers[0] if run.id in claims[0] else workers[1]
            assert run.status == "completed" and run.pid == owner.pid and run.epochs_run == 1
            assert [e for e, _ in reg.history(run.id)["train_loss"]] == [1]
            assert run.params["resolved_device"] == "cpu" and run.params["data"] == str(images.resolve())
            assert Path(run.checkpoint) == artifacts.resolve() / f"run-{run.id}" / "best.pt"
        assert sorted((r.params["seed"], r.params["lr"]) for r in runs) == sorted(
            (s, lr) for s in (1, 2, 3) for lr in (0.1, 0.05))
        assert len({r.split_fingerprint for r in runs}) == 1  # --seed varies init and order; --split-seed the split
    left = cli("--registry", pg_url, "list-runs", "--status", "queued", "--format", "json")
    assert left.exit_code == 1 and json.loads(left.stdout) == []  # nothing matched: exit 1
    empty = cli("--registry", pg_url, "worker")
    assert empty.exit_code == 0 and "No queued runs" in empty.output


def test_a_worker_killed_mid_run_leaves_it_stale_and_requeue_lets_another_finish_it(cli, pg_url, make_images,
                                                                                    tmp_path, monkeypatch):
    artifacts = tmp_path / "shared-artifacts"
    monkeypatch.setenv("ZOO_ARTIFACTS", str(artifacts))
    images = make_images({"cat": 6, "dog": 6}, size=20)
    epochs = 4
    queued = cli("--registry", pg_url, "train", "tinycnn", "--data", images, "--epochs", str(epochs),
                 "--patience", "100", "--queue", *TINY)
    assert queued.exit_code == 0, queued.output
    first = worker(pg_url, artifacts=artifacts)
    deadline = time.time() + 120
    with Registry.open(pg_url, readonly=True) as reg:
        while time.time() < deadline and not (reg.get_run(1).epochs_run or 0) >= 1:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        killed = reg.get_run(1)
    assert killed.status == "running" and killed.stale and killed.pid == first.pid
    assert 1 <= killed.epochs_run < epochs
    assert [r["id"] for r in as_json(cli("--registry", pg_url, "list-runs", "--status", "stale",
                                         "--format", "json"))] == [1]

    assert cli("--registry", pg_url, "requeue", "1").exit_code == 0
    listed = as_json(cli("--registry", pg_url, "list-runs", "--status", "queued", "--format", "json"))
    assert [r["id"] for r in listed] == [1]
    second = worker(pg_url, "--max-runs", "1", artifacts=artifacts)
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err
    assert claimed_ids(out) == [1]
    with Registry.open(pg_url, readonly=True) as reg:
        run = reg.get_run(1)
        assert run.status == "completed" and run.pid == second.pid and not run.stale
        assert run.epochs_run == epochs and [e for e, _ in reg.history(1)["train_loss"]] == list(range(1, epochs + 1))
        assert Path(run.checkpoint).is_file()


def test_a_run_that_cannot_start_on_the_worker_is_failed_and_the_worker_goes_on(cli, make_images, tmp_path):
    gone = make_images({"cat": 6, "dog": 6}, size=20, name="gone")
    kept = make_images({"cat": 6, "dog": 6}, size=20, name="kept")
    for data in (gone, kept):
        assert cli("train", "tinycnn", "--data", data, "--epochs", "1", "--queue", *TINY).exit_code == 0
    import shutil

    shutil.rmtree(gone)  # this worker's machine does not see the first run's data
    result = cli("worker")
    assert result.exit_code == 1 and "1 of 2 claimed run(s) failed" in result.output, result.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        failed, done = reg.get_run(1), reg.get_run(2)
    assert failed.status == "failed" and "does not exist" in failed.error and failed.stop_reason == "error"
    assert done.status == "completed"
    empty = cli("worker")
    assert empty.exit_code == 0 and "No queued runs" in empty.output


def test_worker_options_are_checked(cli):
    result = cli("worker", "--max-runs", "0")
    assert result.exit_code == 1 and "--max-runs" in result.output
    result = cli("worker", "--device", "")
    assert result.exit_code == 1 and "--device" in result.output
    assert_one_line_error(subprocess.run([sys.executable, "-m", "zoo", "requeue", "1"], capture_output=True,
                                         text=True, timeout=60), "No registry at")


def test_queue_with_dry_run_only_prints_the_plan(cli, make_images):
    images = make_images({"cat": 6, "dog": 6}, size=20)
    result = cli("train", "tinycnn", "--data", images, "--seed", "1,2", "--queue", "--dry-run", *TINY)
    assert result.exit_code == 0 and "Plan: 2 runs" in result.output
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()


def test_worker_wait_polls_until_a_run_is_queued(make_images):
    from zoo.training.queue import enqueue, work

    images = make_images({"cat": 6, "dog": 6}, size=20)
    polls = []
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        def sleep(seconds: float) -> None:  # the worker's poll: the second one finds a run queued meanwhile
            polls.append(seconds)
            if len(polls) == 2:
                enqueue([RunSpec(model="tinycnn", data=str(images), epochs=1, image_size=16, batch_size=8)], reg)

        result = work(reg, wait=True, max_runs=1, poll_s=0.25, sleep=sleep)
        run = reg.get_run(1)
    assert polls == [0.25, 0.25]
    assert [o.run_id for o in result.outcomes] == [1] and result.exit_code == 0
    assert run.status == "completed" and run.params["resolved_device"] == "cpu"


def test_a_waiting_worker_stops_cleanly_on_sigterm(tmp_path):
    registry = str(tmp_path / "queue.db")
    Registry.open(registry).close()
    idle = worker(registry, "--wait", "--poll", "0.2", artifacts=tmp_path / "artifacts")
    first = idle.stdout.readline()  # printed once the worker is polling (its SIGTERM handler is in place)
    assert first.startswith("No queued runs: waiting"), first + idle.stderr.read()
    idle.send_signal(signal.SIGTERM)
    out, err = idle.communicate(timeout=60)
    assert idle.returncode == 143, err
    assert err.strip() == "Warning: Terminated (SIGTERM): the worker stopped.", err
    with Registry.open(registry, readonly=True) as reg, reg.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 0
