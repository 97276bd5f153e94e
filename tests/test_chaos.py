"""Chaos (issue 11): tiny trainings, three at a time on one registry, each sent a random signal at a random moment.

Afterwards every run is completed, failed, interrupted or stale (never 'running' with its process gone), run ids
are unique, the registry passes PRAGMA integrity_check and every recorded best checkpoint loads. Images are kept
in memory in some trainings and streamed from disk (with a loader process) in others. ZOO_CHAOS_SEED replays a
schedule; ZOO_CHAOS_ROUNDS makes it longer (default 3 rounds of 3: 9 trainings, so each of the 6 actions is drawn at
least once; about 25 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

# (signal, to the whole process group?) or None: left to finish
ACTIONS = [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGKILL, False),
           (signal.SIGKILL, True), None]
FINAL = {"completed", "failed", "interrupted", "stale"}
PHASES = {"run": 0, "epoch": 1}  # signal once the training has its run, or has recorded an epoch


def start_training(data: Path, registry: Path, streamed: bool, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ZOO_REGISTRY": str(registry), "ZOO_CACHE_MEMORY": "0" if streamed else "64M",
           "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "zoo", "train", "tinycnn", "--data", str(data), "--epochs", "8",
            "--image-size", "16", "--batch-size", "8", "--workers", "1" if streamed else "0", "-q"]
    with open(log, "w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def progress(registry: Path, pid: int) -> int:
    """-1 before the process has a run; else the epochs it has recorded."""
    if not registry.exists():
        return -1
    try:
        con = sqlite3.connect(registry, timeout=5)
        try:
            row = con.execute("SELECT coalesce(epochs_run, 0) FROM runs WHERE pid = ?", (pid,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return -1
    return -1 if row is None else int(row[0])


def deliver(process: subprocess.Popen, action) -> None:
    if action is None or process.poll() is not None:
        return
    signum, group = action
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_random_signals_never_leave_a_run_running_nor_a_damaged_registry(tmp_path, make_images):
    seed = int(os.environ.get("ZOO_CHAOS_SEED", "11"))
    rounds = int(os.environ.get("ZOO_CHAOS_ROUNDS", "3"))
    rng = random.Random(seed)
    data = make_images({"cat": 12, "dog": 12}, size=16)
    registry = tmp_path / "chaos.db"
    actions = (ACTIONS * rounds)[:3 * rounds]  # every kind of signal, in a random order
    rng.shuffle(actions)
    schedule, logs = [], []
    started = time.monotonic()
    for round_ in range(rounds):
        batch = []
        for slot in range(3):
            streamed = (round_ + slot) % 2 == 1
            action = actions[3 * round_ + slot]
            # The moment: while starting up (a delay), or once its run exists / after an epoch (plus a little),
            # so every phase is hit whatever the speed of the machine.
            moment = (rng.choice(["startup", "run", "epoch"]), rng.uniform(0.0, 0.8))
            log = tmp_path / f"train-{round_}-{slot}.log"
            process = start_training(data, registry, streamed, log)
            batch.append({"process": process, "action": action, "moment": moment, "streamed": streamed, "log": log,
                          "start": time.monotonic(), "due": None})
        deadline = time.monotonic() + 120
        while any(t["process"].poll() is None for t in batch) and time.monotonic() < deadline:
            now = time.monotonic()
            for t in batch:
                if t["action"] is None or t["process"].poll() is not None or t["due"] == "sent":
                    continue
                phase, extra = t["moment"]
                if t["due"] is None and (phase == "startup" or progress(registry, t["process"].pid) >= PHASES[phase]):
                    t["due"] = now + (extra * 3 if phase == "startup" else extra)
                if t["due"] is not None and now >= t["due"]:
                    deliver(t["process"], t["action"])
                    t["due"] = "sent"
            time.sleep(0.05)
        for t in batch:
            process = t["process"]
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(f"seed {seed}: a training did not end ({t['action']}, {t['moment']}):\n"
                            f"{t['log'].read_text()}")
            action = t["action"]
            schedule.append((action and f"{action[0].name} to {'group' if action[1] else 'process'}",
                             t["moment"][0], "streamed" if t["streamed"] else "memory", code))
            logs.append(t["log"])
    elapsed = time.monotonic() - started
    where = f"seed {seed}, {elapsed:.0f}s, schedule {schedule}"

    for (_, _, _, code), log in zip(schedule, logs):  # never a crash: a clean exit or the signal's own code
        # -SIGINT: a process killed by it before zoo handles it. (A Ctrl-C at start-up that left exec()'d code used
        # to end this way too, after the run was recorded: 6 of 80 in a loop; see zoo.cli._forget_the_caught_interrupt.)
        assert code in (0, 1, 130, 143, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT), \
            f"{where}\n{log.name} (exit {code}):\n{log.read_text()[-3000:]}"
    for log in tmp_path.glob("train-*.log"):
        text = log.read_text()
        assert "Unexpected" not in text, f"{where}\n{log.name}:\n{text}"

    if not registry.exists():
        pytest.skip(f"no training got as far as its registry ({where})")
    con = sqlite3.connect(registry)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
    ids = [row[0] for row in con.execute("SELECT id FROM runs")]
    uuids = [row[0] for row in con.execute("SELECT uuid FROM runs")]
    checkpoints = [row for row in con.execute("SELECT id, checkpoint FROM runs WHERE checkpoint IS NOT NULL")]
    errors = {row[0]: row[1] for row in con.execute("SELECT id, error FROM runs WHERE status = 'failed'")}
    ahead = con.execute("SELECT id, best_epoch, epochs_run FROM runs WHERE best_epoch > coalesce(epochs_run, 0)")
    assert not ahead.fetchall(), f"a best epoch without its history ({where})"  # issue 17, item 5
    con.close()
    assert len(ids) == len(set(ids)) and len(uuids) == len(set(uuids)), where

    listed = subprocess.run([sys.executable, "-m", "zoo", "list-runs", "--all", "--format", "json"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "ZOO_REGISTRY": str(registry)})
    assert listed.returncode == 0, listed.stderr
    statuses = {run["id"]: run["status"] for run in json.loads(listed.stdout)}
    assert sorted(statuses) == sorted(ids), where
    assert set(statuses.values()) <= FINAL, f"{statuses} ({where})"

    from zoo.checkpoint import load_checkpoint

    for run_id, checkpoint in checkpoints:
        assert Path(checkpoint).is_file(), f"run {run_id}: {checkpoint} recorded but missing ({where})"
        assert load_checkpoint(Path(checkpoint))["model"] == "tinycnn"
    print(where, statuses, "failed:", errors)


def interrupted_run(data: Path, registry: Path, log: Path) -> None:
    """One run of 6 epochs, stopped by SIGINT once it has recorded an epoch: interrupted, with a last.pt."""
    process = start_training(data, registry, False, log)
    deadline = time.monotonic() + 120
    while progress(registry, process.pid) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=120) == 130, log.read_text()


@pytest.mark.slow
def test_concurrent_resumes_under_random_signals_have_one_owner(tmp_path, make_images):
    """Three `zoo train --resume 1` at once, some sent a random signal: at most one trains the run (the others
    are refused in one line, or stopped), and the run ends recorded, its history whole up to its best epoch."""
    seed = int(os.environ.get("ZOO_CHAOS_SEED", "17"))
    rng = random.Random(seed)
    data = make_images({"cat": 12, "dog": 12}, size=16)
    registry = tmp_path / "chaos.db"
    env = {**os.environ, "ZOO_REGISTRY": str(registry), "ZOO_CACHE_MEMORY": "64M", "OMP_NUM_THREADS": "1"}
    interrupted_run(data, registry, tmp_path / "first.log")
    actions = [rng.choice(ACTIONS[:3] + [None, None]) for _ in range(3)]
    resumes = []
    for slot, action in enumerate(actions):
        log = tmp_path / f"resume-{slot}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-m", "zoo", "train", "--resume", "1", "-q"], stdout=out,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        resumes.append((process, action, log))
    signalled = []
    deadline = time.monotonic() + 180
    while any(p.poll() is None for p, _, _ in resumes) and time.monotonic() < deadline:
        for process, action, _ in resumes:
            if action is not None and process.pid not in signalled and progress(registry, process.pid) >= 0:
                deliver(process, action)  # it owns the run now
                signalled.append(process.pid)
        time.sleep(0.05)
    codes = []
    for process, action, log in resumes:
        try:
            codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"seed {seed}: a resume did not end:\n{log.read_text()}")
    where = f"seed {seed}, actions {actions}, codes {codes}, {len(signalled)} owner(s) signalled"
    texts = [log.read_text() for _, _, log in resumes]
    assert all("Unexpected" not in text and "Traceback" not in text for text in texts), f"{where}\n{texts}"
    refused = [text for text in texts if "was resumed by another process" in text
               or "only an interrupted or stale run can be resumed" in text]
    # One owner at a time: a resume that is not refused owns the run until it ends; a second owner is possible
    # only after the first was stopped by its signal (the run is interrupted again, and resumable).
    assert codes.count(0) <= 1 and len(refused) >= 3 - 1 - len(signalled), f"{where}\n{texts}"
    assert all(code in (0, 1, 130, 143, -signal.SIGTERM, -signal.SIGINT) for code in codes), where
    con = sqlite3.connect(registry)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
    status, best, epochs = con.execute("SELECT status, best_epoch, epochs_run FROM runs WHERE id = 1").fetchone()
    history = [row[0] for row in con.execute("SELECT DISTINCT epoch FROM history WHERE run_id = 1 ORDER BY epoch")]
    con.close()
    assert status in FINAL - {"stale"} and (best or 0) <= epochs and history == list(range(1, epochs + 1)), where
