"""The registry API the engine calls (zoo.store.Registry), on real SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from zoo.errors import UnknownName, ZooError
from zoo.store import Registry, migrations
from zoo.store.registry import stale_reason, utcnow

DATASET = {
    "path": "/data/pets", "fingerprint": "fp-data", "split_fingerprint": "fp-split", "classes": ["cat", "dog"],
    "train_size": 30, "val_size": 10, "test_size": 10,
}
PARAMS = {"lr": 0.01, "epochs": 5, "pretrained": False, "optimizer": "adamw", "mean": [0.5, 0.4, 0.3],
          "seed": None, "image_size": 32}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "registry.db"


def test_lifecycle_round_trip(registry_location):
    with Registry.open(registry_location) as reg:
        run_id = reg.start_run(model="resnet18", plugin="resnet", params=PARAMS, name="base", device="cpu",
                               dataset=DATASET, tags={"exp": "one"})
        for epoch in (1, 2, 3):
            reg.log_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 1.5 / epoch, "seconds": 2.0})
        reg.update_run(run_id, checkpoint=Path("/tmp/x.pt"))
        reg.log_metrics(run_id, {"test_accuracy": 0.75, "test_f1/cat": 0.5}, confusion=[[3, 1], [1, 3]])
        reg.finish_run(run_id, "completed", stop_reason="max_epochs", best_epoch=3, epochs_run=3)
        eval_id = reg.add_evaluation(run_id, {"test_accuracy": 0.5}, dataset="/other", dataset_fingerprint="fp2",
                                     confusion=[[1, 1], [1, 1]], classes=["cat", "dog"])
        run = reg.get_run(run_id)
        assert reg.get_run(run.uuid[:8]).id == run_id
        assert reg.get_run(f"#{run_id}").id == run_id
        history = reg.history(run_id)

    assert run.params == PARAMS  # int, float, bool, str, list and None come back with their types
    assert type(run.params["epochs"]) is int and type(run.params["pretrained"]) is bool
    assert (run.model, run.plugin, run.name, run.device, run.status) == ("resnet18", "resnet", "base", "cpu", "completed")
    assert (run.dataset_fingerprint, run.split_fingerprint, run.classes) == ("fp-data", "fp-split", ["cat", "dog"])
    assert (run.train_size, run.val_size, run.test_size) == (30, 10, 10)
    assert (run.best_epoch, run.epochs_run, run.stop_reason, run.checkpoint) == (3, 3, "max_epochs", "/tmp/x.pt")
    assert run.metrics == {"test_accuracy": 0.75, "test_f1/cat": 0.5}
    assert run.confusion == [[3, 1], [1, 3]]
    assert run.tags == {"exp": "one"}
    assert run.host == socket.gethostname() and run.pid == os.getpid()
    assert run.python_version and run.zoo_version
    assert run.finished >= run.started
    assert run.best_val_loss == pytest.approx(0.5)
    assert [e.id for e in run.evaluations] == [eval_id]
    assert run.evaluations[0].metrics == {"test_accuracy": 0.5} and run.evaluations[0].dataset == "/other"
    assert history["train_loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert set(history) == {"train_loss", "val_loss", "seconds"}


def test_log_epoch_replaces_a_relogged_epoch_and_keeps_nan_as_missing(registry_location):
    with Registry.open(registry_location) as reg:
        run_id = reg.start_run(model="m", plugin="p", params={})
        reg.log_epoch(run_id, 1, {"train_loss": 2.0})
        reg.log_epoch(run_id, 1, {"train_loss": 1.0, "val_loss": float("nan")})
        reg.log_epoch(run_id, 2, {"train_loss": float("inf")})
        assert reg.history(run_id) == {"train_loss": [(1, 1.0), (2, None)], "val_loss": [(1, None)]}
        assert reg.get_run(run_id).epochs_run == 2
        reg.log_epoch(run_id, 1, {"lr": 0.1})  # an earlier epoch does not lower epochs_run
        assert reg.get_run(run_id).epochs_run == 2


def test_unknown_runs_and_bad_values_are_clear_errors(registry_location):
    with Registry.open(registry_location) as reg:
        run_id = reg.start_run(model="m", plugin="p", params={})
        with pytest.raises(UnknownName, match="No run '999'"):
            reg.get_run(999)
        with pytest.raises(UnknownName, match="not a run id"):
            reg.get_run("resnet; DROP TABLE runs")
        with pytest.raises(UnknownName):
            reg.log_epoch(999, 1, {"train_loss": 1.0})
        with pytest.raises(UnknownName):
            reg.add_evaluation(999, {}, dataset="d", dataset_fingerprint=None, confusion=None, classes=[])
        with pytest.raises(ValueError):
            reg.finish_run(run_id, "done")
        with pytest.raises(ValueError):
            reg.update_run(run_id, id=5)
        assert reg.get_run(run_id).status == "running"


def test_sqlite_settings_on_every_connection(db):
    with Registry.open(db) as reg:
        reg.start_run(model="m", plugin="p", params={})
        connections = [reg.engine.connect() for _ in range(3)]  # several pooled connections, each set up
        for conn in connections:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            conn.close()
    with Registry.open(db, readonly=True) as ro:
        with ro.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        with pytest.raises(ZooError, match="read-only"):
            ro.start_run(model="m", plugin="p", params={})


def test_delete_cascades_to_every_table_and_removes_artifacts(db):
    with Registry.open(db) as reg:
        keep = reg.start_run(model="m", plugin="p", params={"a": 1}, tags={"t": "1"})
        gone = reg.start_run(model="m", plugin="p", params={"a": 2}, tags={"t": "2"})
        checkpoints = {}
        for run_id in (keep, gone):
            reg.log_epoch(run_id, 1, {"train_loss": 1.0})
            reg.log_metrics(run_id, {"test_accuracy": 0.5})
            reg.add_evaluation(run_id, {"test_accuracy": 0.4}, dataset="d", dataset_fingerprint=None,
                               confusion=None, classes=[])
            folder = reg.run_artifacts_dir(run_id)
            folder.mkdir(parents=True)
            checkpoints[run_id] = folder / "best.pt"
            checkpoints[run_id].write_bytes(b"weights")
            reg.finish_run(run_id, "completed", checkpoint=str(checkpoints[run_id]))
        assert reg.artifacts_dir == db.parent / "registry-artifacts"
        removed = reg.delete_runs([gone])
    assert checkpoints[keep].exists() and not checkpoints[gone].exists()
    assert not checkpoints[gone].parent.exists() and checkpoints[gone].parent in removed
    con = sqlite3.connect(db)
    for table in ("params", "history", "metrics", "tags", "evaluations"):
        assert {row[0] for row in con.execute(f"SELECT run_id FROM {table}")} == {keep}, table
    assert [row[0] for row in con.execute("SELECT id FROM runs")] == [keep]
    con.close()


def test_artifacts_dir_follows_env(db, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_ARTIFACTS", str(tmp_path / "elsewhere"))
    with Registry.open(db) as reg:
        assert reg.artifacts_dir == tmp_path / "elsewhere" and reg.artifacts_dir.is_dir()


@pytest.mark.parametrize("readonly", [True, False])
def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path, readonly):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, not a database\n" * 20)
    before = digest(path)
    with pytest.raises(ZooError, match="not a SQLite database"):
        Registry.open(path, readonly=readonly)
    assert digest(path) == before and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    before = digest(path)
    for readonly in (True, False):
        with pytest.raises(ZooError, match="not a zoo registry"):
            Registry.open(path, readonly=readonly)
    assert digest(path) == before


def test_missing_file_is_an_error_for_readers_and_created_for_writers(tmp_path):
    path = tmp_path / "sub" / "new.db"
    with pytest.raises(ZooError, match="No registry at"):
        Registry.open(path, readonly=True)
    with pytest.raises(ZooError, match="No registry at"):
        Registry.open(path, create=False)
    assert not path.parent.exists()
    with Registry.open(path) as reg:
        assert reg.schema_version() == migrations.latest_version()
    assert path.exists()
    with pytest.raises(ZooError, match="is a directory"):
        Registry.open(tmp_path)


def test_a_registry_from_a_newer_zoo_is_refused_untouched(db):
    Registry.open(db).close()
    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_migrations (version, name, applied) VALUES (99, 'future', '2030-01-01')")
    con.commit()
    con.close()
    before = digest(db)
    for readonly in (True, False):
        with pytest.raises(ZooError, match="newer zoo .*schema version 99"):
            Registry.open(db, readonly=readonly)
    assert digest(db) == before


def test_an_older_registry_is_upgraded_in_place_by_writers_only(db, monkeypatch, cli):
    with Registry.open(db) as reg:
        run_id = reg.start_run(model="m", plugin="p", params={})
    calls = []

    def add_note(conn):
        calls.append(1)
        migrations.add_column(conn, "runs", "note", "TEXT")

    latest = migrations.latest_version()
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, (latest + 1, "add_note", add_note)])
    monkeypatch.setattr(migrations, "READABLE_FROM", latest + 1)  # a column the read path would need
    before = digest(db)
    with pytest.raises(ZooError, match="zoo migrate"):
        Registry.open(db, readonly=True)
    assert digest(db) == before

    result = cli("--registry", db, "migrate")
    assert result.exit_code == 0 and f"schema version {latest + 1}" in result.output
    assert calls == [1]
    with Registry.open(db) as reg:  # applied once, recorded, data kept
        assert reg.schema_version() == latest + 1 and reg.get_run(run_id).model == "m"
    assert calls == [1]
    con = sqlite3.connect(db)
    assert "note" in [row[1] for row in con.execute("PRAGMA table_info(runs)")]
    versions = [row[0] for row in con.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, latest + 2))
    con.close()


def test_run_ids_are_never_reused_after_a_delete(registry_location, cli):
    with Registry.open(registry_location) as reg:
        assert [reg.start_run(model="m", plugin="p", params={}) for _ in range(3)] == [1, 2, 3]
        reg.finish_run(3, "completed")
    assert cli("--registry", registry_location, "delete", "3", "--yes").exit_code == 0
    with Registry.open(registry_location) as reg:
        assert reg.start_run(model="m", plugin="p", params={}) == 4
        reg.delete_runs([4, 2])
        assert reg.start_run(model="m", plugin="p", params={}) == 5


def test_a_registry_from_before_the_run_id_counter_is_migrated_and_keeps_counting(db, cli):
    with Registry.open(db) as reg:
        for _ in range(3):
            reg.start_run(model="m", plugin="p", params={})
    con = sqlite3.connect(db)  # make it what zoo with schema version 1 wrote: no counter
    con.execute("DROP TABLE counters")
    con.execute("DELETE FROM schema_migrations WHERE version >= 2")
    con.commit()
    con.close()
    before = digest(db)
    listing = cli("--registry", db, "list-runs", "--format", "json")  # readers need no `zoo migrate` for it
    assert listing.exit_code == 0 and len(json.loads(listing.stdout)) == 3
    assert digest(db) == before
    with Registry.open(db) as reg:  # the writer upgrades it: the counter starts at the highest id present
        assert reg.schema_version() == migrations.latest_version()
        reg.delete_runs([3])
        assert reg.start_run(model="m", plugin="p", params={}) == 4
        assert [v.id for v in (reg.get_run(i) for i in (1, 2, 4))] == [1, 2, 4]


def test_sqlalchemy_url_locations(tmp_path):
    url = f"sqlite:///{tmp_path / 'url.db'}"
    with Registry.open(url) as reg:
        run_id = reg.start_run(model="m", plugin="p", params={"x": 1})
    assert (tmp_path / "url.db").exists()
    with Registry.open(url, readonly=True) as reg:
        assert reg.get_run(run_id).params == {"x": 1}
    with Registry.open("sqlite://") as reg:  # in memory, through the generic SQLAlchemy path
        assert reg.get_run(reg.start_run(model="m", plugin="p", params={})).status == "running"


def test_compact_leaves_a_file_that_readers_open_without_side_files(db):
    with Registry.open(db) as reg:
        reg.start_run(model="m", plugin="p", params={})
        reg.compact()
    files = sorted(os.listdir(db.parent))
    before = digest(db)
    with Registry.open(db, readonly=True) as reg:
        assert reg.get_run(1).model == "m"
    assert sorted(os.listdir(db.parent)) == files and digest(db) == before
    with Registry.open(db) as reg:  # the next writer turns WAL back on
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_stale_runs_are_computed_when_read(db):
    with Registry.open(db) as reg:
        alive = reg.start_run(model="m", plugin="p", params={})  # this process: alive
        dead = reg.start_run(model="m", plugin="p", params={})
        reg.update_run(dead, pid=dead_pid())
        remote = reg.start_run(model="m", plugin="p", params={})
        reg.log_epoch(remote, 1, {"seconds": 30.0})
        reg.update_run(remote, host="another-host", heartbeat=utcnow() - timedelta(minutes=20))
        slow = reg.start_run(model="m", plugin="p", params={})
        reg.log_epoch(slow, 1, {"seconds": 600.0})  # 10 min epochs: 20 min without heartbeat is fine
        reg.update_run(slow, host="another-host", heartbeat=utcnow() - timedelta(minutes=20))
        finished = reg.start_run(model="m", plugin="p", params={})
        reg.finish_run(finished, "interrupted", stop_reason="interrupted")
        reg.update_run(finished, pid=dead_pid())
        views = {i: reg.get_run(i) for i in (alive, dead, remote, slow, finished)}
    assert views[alive].display_status == "running" and views[alive].stale is None
    assert views[dead].display_status == "stale" and "not running" in views[dead].stale
    assert views[dead].status == "running"  # the file still says running: reading never writes
    assert views[remote].display_status == "stale" and "heartbeat" in views[remote].stale
    assert views[slow].display_status == "running"
    assert views[finished].display_status == "interrupted"


def test_stale_rule_thresholds():
    class Row:
        status, host, pid = "running", "elsewhere", 1
        started = created = utcnow() - timedelta(hours=3)

    now = utcnow()
    row = Row()
    row.heartbeat = now - timedelta(minutes=9)
    assert stale_reason(row, 5.0, now=now, host="here") is None  # under the 10 min floor
    row.heartbeat = now - timedelta(minutes=11)
    assert stale_reason(row, 5.0, now=now, host="here")
    assert stale_reason(row, 300.0, now=now, host="here") is None  # 3 x 5 min epochs = 15 min
    assert stale_reason(row, None, now=now, host="here") is None  # no epoch yet: 1 h
    row.heartbeat = now - timedelta(minutes=61)
    assert stale_reason(row, None, now=now, host="here")


def test_light_read_tables_match_the_declarative_schema():
    from zoo.store import schema, tables

    declared = {t.name: t for t in schema.Base.metadata.sorted_tables}
    assert set(declared) == {t.name for t in tables.ALL}
    for light in tables.ALL:
        full = declared[light.name]
        assert [c.name for c in light.columns] == [c.name for c in full.columns], light.name
        for c in light.columns:
            assert type(c.type)._type_affinity is type(full.c[c.name].type)._type_affinity, (light.name, c.name)


def test_read_only_opening_does_not_import_the_orm(db):
    Registry.open(db).close()
    code = (
        "import sys\n"
        "from zoo.store import Registry, queries\n"
        f"reg = Registry.open({str(db)!r}, readonly=True)\n"
        "with reg.connect() as conn:\n"
        "    queries.list_runs(conn, queries.RunFilter(), limit=20, host=reg.host)\n"
        "print('sqlalchemy.orm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("url, fragments", [
    ("postgresql+pg8000://u:secret@localhost/db", ["driver 'pg8000'", "pip install 'pg8000'", "u:***@"]),
    ("mysql+pymysql://u@localhost/db", ["driver 'pymysql'", "pip install 'PyMySQL'"]),
    ("foo://bar", ["no database dialect 'foo'"]),
    ("not a url://x", ["not a valid SQLAlchemy URL"]),
    ("sqlite+pysqlite:////proc/no-such-dir/x.db", ["Cannot read registry", "unable to open database file"]),
])
def test_registry_urls_with_a_missing_driver_or_a_bad_url_are_one_clear_line(cli, url, fragments):
    result = cli("--registry", url, "list-runs")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "Unexpected" not in lines[0], result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert "secret" not in result.output
