"""Several processes write one SQLite registry at once (WAL, busy timeout, BEGIN IMMEDIATE): no row is lost."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from zoo.store import Registry, migrations

WORKERS = 8
EPOCHS = 50
KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")

WORKER = """
import os, sys, time
from pathlib import Path
from zoo.store import Registry

db, go, worker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
while not go.exists():  # start together
    time.sleep(0.005)
reg = Registry.open(db)  # the first ones to get here create the file: exactly once
run_id = reg.start_run(model=f"model{worker}", plugin="test", params={"worker": worker}, tags={"w": str(worker)})
epochs, keys = EPOCHS, KEYS
for epoch in range(1, epochs + 1):
    reg.log_epoch(run_id, epoch, {k: worker + epoch / 1000 for k in keys})
reg.log_metrics(run_id, {"test_accuracy": worker / 10}, confusion=[[worker, 1], [1, worker]])
reg.finish_run(run_id, "completed", epochs_run=epochs, best_epoch=epochs, stop_reason="max_epochs")
reg.close()
print(run_id)
"""

READER = """
import sys, time
from pathlib import Path
from zoo.store import Registry
from zoo.store import queries

db, go = sys.argv[1], Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
seen = 0
deadline = time.time() + 60
while time.time() < deadline:
    try:
        reg = Registry.open(db, readonly=True)
    except Exception as exc:  # the writers have not created it yet
        time.sleep(0.02)
        continue
    with reg.connect() as conn:
        runs, total = queries.list_runs(conn, queries.RunFilter(), limit=None, host=reg.host)
    reg.close()
    seen += 1
    if total == WORKERS and all(r.status == "completed" for r in runs):
        break
print(seen)
"""


def test_eight_writers_lose_no_row(tmp_path: Path):
    db = tmp_path / "shared.db"
    go = tmp_path / "go"
    script = f"EPOCHS, KEYS = {EPOCHS}, {KEYS!r}\n" + WORKER
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(db), str(go), str(w)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for w in range(WORKERS)
    ]
    reader = subprocess.Popen([sys.executable, "-c", f"WORKERS = {WORKERS}\n" + READER, str(db), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let every interpreter start, then release them at once
    go.touch()
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err  # reading while others write never fails
    assert int(out) >= 1

    run_ids = sorted(int(out) for out, _ in outputs)
    assert run_ids == list(range(1, WORKERS + 1))  # distinct, issued in turn from the counter
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM history").fetchone()[0] == WORKERS * EPOCHS * len(KEYS)
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrations.MIGRATIONS)
    assert con.execute("SELECT value FROM counters WHERE name = 'runs'").fetchone()[0] == WORKERS
    con.close()
    with Registry.open(db, readonly=True) as reg:
        for run_id in run_ids:
            run = reg.get_run(run_id)
            worker = run.params["worker"]
            history = reg.history(run_id)
            assert run.status == "completed" and run.epochs_run == EPOCHS
            assert set(history) == set(KEYS)
            assert [e for e, _ in history["val_loss"]] == list(range(1, EPOCHS + 1))
            assert history["val_loss"][-1][1] == worker + EPOCHS / 1000
            assert run.metrics == {"test_accuracy": worker / 10} and run.tags == {"w": str(worker)}
