"""A PostgreSQL registry on a real server (tests/postgres_server.py starts one per session), beside SQLite:
the read commands on both, read-only transactions, connection errors, 16 concurrent writers, shared artifacts."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postgres_server import PASSWORD, PASSWORD_ROLE
from test_cli_runs import CLASSES, add_run, assert_one_line_error, dead_pid, zoo
from zoo.store import Registry
from zoo.store.migrations import latest_version


def fill(location: str) -> dict[str, int]:
    """Completed, failed, stale and queued runs, through the lifecycle API."""
    base = {"epochs": 4, "batch_size": 16, "optimizer": "adamw"}
    with Registry.open(location) as reg:
        ids = {
            "a": add_run(reg, "resnet18", params={**base, "lr": 0.01}, acc=0.90, loss=0.30, tags={"exp": "base"},
                         name="first"),
            "b": add_run(reg, "alexnet", params={**base, "lr": 0.001}, acc=0.75, loss=0.60, tags={"exp": "base"}),
            "failed": add_run(reg, "tinycnn", params={**base, "lr": 0.01}, status="failed", epochs=2,
                              error="RuntimeError: CUDA out of memory"),
            "stale": add_run(reg, "resnet50", params={**base, "lr": 0.01}, status="running", epochs=1),
        }
        reg.update_run(ids["stale"], pid=dead_pid())
        ids["queued"] = reg.queue_run(model="tinycnn", plugin="tinycnn", params={**base, "lr": 0.5},
                                      tags={"zoo.group": "g1"})
        reg.add_evaluation(ids["a"], {"test_accuracy": 0.55}, dataset="/data/other", dataset_fingerprint="fp-other",
                           confusion=[[3, 2], [2, 3]], classes=CLASSES)
    return ids


def as_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_read_commands_on_sqlite_and_postgresql(cli, registry_location):
    ids = fill(registry_location)
    listed = as_json(cli("--registry", registry_location, "list-runs", "--format", "json"))
    assert [r["id"] for r in listed] == sorted(ids.values(), reverse=True)
    status = {r["id"]: r["status"] for r in listed}
    assert status == {ids["a"]: "completed", ids["b"]: "completed", ids["failed"]: "failed",
                      ids["stale"]: "stale", ids["queued"]: "queued"}
    assert [r["id"] for r in as_json(cli("list-runs", "--registry", registry_location, "--status", "queued",
                                         "--format", "json"))] == [ids["queued"]]
    assert [r["id"] for r in as_json(cli("--registry", registry_location, "list-runs", "--status", "stale",
                                         "--format", "json"))] == [ids["stale"]]
    assert [r["id"] for r in as_json(cli("--registry", registry_location, "list-runs", "--tag", "exp=base",
                                         "--model", "res*", "--format", "json"))] == [ids["a"]]

    shown = as_json(cli("--registry", registry_location, "show", ids["a"], "--format", "json"))
    assert shown["name"] == "first" and shown["metrics"]["test_accuracy"] == 0.9
    assert shown["params"]["lr"] == 0.01 and shown["evaluations"][0]["dataset"] == "/data/other"
    assert [point[1] for point in shown["history"]["train_loss"]] == [2.0, 1.0, pytest.approx(2 / 3), 0.5]

    ranked = as_json(cli("--registry", registry_location, "compare", "--metric", "accuracy", "--format", "json"))
    assert [r["id"] for r in ranked] == [ids["a"], ids["b"]]
    table = cli("--registry", registry_location, "list-runs")
    assert table.exit_code == 0 and "queued" in table.stdout and "stale" in table.stdout


def table_dump(server, database: str) -> list:
    """Every row of every table of a database, in a stable order."""
    tables = [row[0] for row in server.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename", database)]
    return [(t, server.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2', database)) for t in tables]


def test_read_commands_run_in_read_only_transactions_and_change_nothing(postgres_server, pg_url, cli, tmp_path):
    database = pg_url.split("/")[3].split("?")[0]
    # An empty database: a read command says so and creates nothing.
    assert_one_line_error(zoo("--registry", pg_url, "list-runs"), "is empty")
    assert table_dump(postgres_server, database) == []

    ids = fill(pg_url)
    before = table_dump(postgres_server, database)
    for args in (["list-runs"], ["list-runs", "--status", "stale"], ["show", str(ids["a"])],
                 ["compare", "--metric", "accuracy", "--by", "lr"], ["diff", str(ids["a"]), str(ids["b"])]):
        result = cli("--registry", pg_url, *args)
        assert result.exit_code == 0, (args, result.output)
    assert table_dump(postgres_server, database) == before

    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with Registry.open(pg_url, readonly=True) as reg, reg.connect() as conn:
        assert conn.execute(text("SHOW transaction_read_only")).scalar() == "on"
        with pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("DELETE FROM runs"))
    assert table_dump(postgres_server, database) == before
    with Registry.open(pg_url) as reg, reg.connect() as conn:  # a writer's transactions are not read-only
        assert conn.execute(text("SHOW transaction_read_only")).scalar() == "off"


def test_read_commands_do_not_import_torch_on_postgresql(pg_url):
    ids = fill(pg_url)
    from conftest import TORCH_PROBE as probe

    for args in (["list-runs", "--status", "queued"], ["show", str(ids["a"])], ["compare", "--metric", "f1"]):
        done = subprocess.run([sys.executable, "-c", probe, "--registry", pg_url, *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().endswith("NO-TORCH"), (args, done.stderr)


def one_line_error(result, *fragments: str) -> str:
    """A CliRunner result that is one 'Error: ...' line holding every fragment, exit code 1."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def test_wrong_password_host_or_database_is_one_clear_line(cli, postgres_server, pg_url, tmp_path):
    fill(pg_url)
    database = pg_url.split("/")[3].split("?")[0]
    socket = f"host={postgres_server.socket_dir}&port={postgres_server.port}"
    right = f"postgresql+psycopg://{PASSWORD_ROLE}:{PASSWORD}@/{database}?{socket}"
    assert len(as_json(cli("--registry", right, "list-runs", "--format", "json"))) == 5  # the password works

    wrong_password = f"postgresql+psycopg://{PASSWORD_ROLE}:nope@/{database}?{socket}"
    for args in (["list-runs"], ["tag", "1", "k=v"], ["show", "1"]):
        line = one_line_error(cli("--registry", wrong_password, *args), "password authentication failed",
                              "check the user and password")
        assert "nope" not in line  # the password is never shown
    one_line_error(cli("--registry", f"postgresql+psycopg://postgres@/no_such_db?{socket}", "list-runs"),
                   'database "no_such_db" does not exist', "createdb")
    one_line_error(cli("--registry", "postgresql+psycopg://postgres@127.0.0.1:1/zoo", "compare"),
                   "Connection refused", "check the host and port")
    one_line_error(cli("--registry", f"postgresql+psycopg://nobody@/{database}?{socket}", "list-runs"),
                   'role "nobody" does not exist')
    # What a user sees in a terminal, beside the SQLite counterpart: one red line each, exit code 1.
    assert_one_line_error(zoo("--registry", wrong_password, "list-runs"), "Cannot read registry",
                          "postgresql+psycopg://zoo_pw:***@/", "password authentication failed")
    assert_one_line_error(zoo("--registry", tmp_path / "missing.db", "list-runs"), "No registry at")


def test_a_connection_dropped_by_the_server_is_replaced(postgres_server, pg_url):
    ids = fill(pg_url)
    database = pg_url.split("/")[3].split("?")[0]
    with Registry.open(pg_url) as reg:
        assert reg.get_run(ids["a"]).name == "first"  # the pool now holds an open connection
        killed = postgres_server.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
            "AND pid <> pg_backend_pid()")
        assert killed and all(row[0] for row in killed)
        assert reg.get_run(ids["b"]).model == "alexnet"  # pool_pre_ping: a fresh connection, no error
        reg.set_tags(ids["b"], {"after": "reconnect"})
        assert reg.get_run(ids["b"]).tags["after"] == "reconnect"


def write_one_run(url: str, go: Path, worker: int, epochs: int) -> None:
    """One writer process: a run with its epochs, metrics and end, and a queued run."""
    while not go.exists():  # start together
        time.sleep(0.005)
    reg = Registry.open(url)  # a new database: every writer migrates it at once, exactly one applies them
    run_id = reg.start_run(model=f"model{worker}", plugin="test", params={"worker": worker}, tags={"w": str(worker)})
    for epoch in range(1, epochs + 1):
        reg.log_epoch(run_id, epoch, {"train_loss": worker + epoch / 1000, "val_loss": 1.0, "seconds": 0.1})
    reg.queue_run(model="q", plugin="test", params={"from": worker})
    reg.log_metrics(run_id, {"test_accuracy": worker / 100}, confusion=[[worker, 1], [1, worker]])
    reg.finish_run(run_id, "completed", epochs_run=epochs, best_epoch=epochs, stop_reason="max_epochs")
    reg.close()


def forked(target, *args) -> multiprocessing.process.BaseProcess:
    """A process forked from this one (zoo.store already imported: no interpreter start-up per writer)."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    return process


def test_sixteen_concurrent_writers_on_postgresql_lose_nothing(postgres_server, pg_url, tmp_path):
    writers, epochs = 16, 20
    go = tmp_path / "go"
    procs = [forked(write_one_run, pg_url, go, w, epochs) for w in range(writers)]
    time.sleep(0.5)
    go.touch()  # release them together
    for proc in procs:
        proc.join(timeout=240)
        assert proc.exitcode == 0

    with Registry.open(pg_url, readonly=True) as reg:
        from zoo.store import queries

        with reg.connect() as conn:
            runs, total = queries.list_runs(conn, queries.RunFilter(), limit=None, host=reg.host)
        assert sorted(r.id for r in runs) == list(range(1, 2 * writers + 1))  # every id once, none skipped
        done = [r for r in runs if r.status == "completed"]
        assert sorted(r.model for r in done) == sorted(f"model{w}" for w in range(writers))
        for run in done:
            w = int(run.model[5:])
            run = reg.get_run(run.id)  # with its params
            assert run.params == {"worker": w} and run.tags == {"w": str(w)}
            assert run.metrics == {"test_accuracy": pytest.approx(w / 100)} and run.confusion == [[w, 1], [1, w]]
            history = reg.history(run.id)
            assert [e for e, _ in history["train_loss"]] == list(range(1, epochs + 1))
            assert history["train_loss"][-1][1] == pytest.approx(w + epochs / 1000)
        assert sorted(reg.get_run(r.id).params["from"] for r in runs if r.status == "queued") == list(range(writers))
    database = pg_url.split("/")[3].split("?")[0]
    assert postgres_server.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1",
                                   database) == [(v, 1) for v in range(1, latest_version() + 1)]
    assert postgres_server.execute("SELECT value FROM counters WHERE name = 'runs'", database) == [(2 * writers,)]


def test_training_with_a_server_registry_needs_shared_writable_artifacts(cli, pg_url, make_images, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("ZOO_ARTIFACTS")
    images = make_images({"cat": 6, "dog": 6}, size=20)
    train = ["--registry", pg_url, "train", "tinycnn", "--data", images, "--image-size", "16", "--epochs", "1"]

    one_line_error(cli(*train), "set ZOO_ARTIFACTS", "every machine sees")
    one_line_error(cli(*train, "--queue"), "set ZOO_ARTIFACTS")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("ZOO_ARTIFACTS", str(blocker / "checkpoints"))
    one_line_error(cli(*train), "Artifacts folder", "cannot be created")
    with Registry.open(pg_url, readonly=True) as reg, reg.connect() as conn:
        from zoo.store import queries

        assert queries.list_runs(conn, queries.RunFilter(), limit=None, host=reg.host)[1] == 0  # nothing recorded

    shared = tmp_path / "shared"
    monkeypatch.setenv("ZOO_ARTIFACTS", str(shared))
    done = cli(*train)
    assert done.exit_code == 0, done.output
    with Registry.open(pg_url, readonly=True) as reg:
        run = reg.get_run(1)
    assert run.status == "completed" and Path(run.checkpoint) == shared.resolve() / "run-1" / "best.pt"
    assert Path(run.checkpoint).is_file() and not list(shared.glob(".zoo-write-check-*"))


def test_a_postgresql_url_without_the_driver_names_the_extra(tmp_path):
    probe = ("import sys; sys.modules['psycopg'] = None\n"
             "from zoo.cli import main\nsys.argv = ['zoo'] + sys.argv[1:]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", probe, "--registry", "postgresql+psycopg://u@h/db", "list-runs"],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(done, "psycopg", "pip install")


def test_zoo_registry_takes_a_postgresql_url(pg_url):
    fill(pg_url)
    env = dict(os.environ, ZOO_REGISTRY=pg_url)
    done = subprocess.run([sys.executable, "-m", "zoo", "list-runs", "--format", "csv"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 6  # header + 5 runs


def test_a_server_restart_during_a_run_is_waited_out_and_nothing_is_lost(postgres_server, pg_url, monkeypatch):
    """The server stops at once (as in a crash) while a run records its epochs, and comes back: the epochs written
    meanwhile are kept and recorded, the final write waits for the server with back-off, and the run ends
    completed. Without the server for longer than zoo retries: one clear line."""
    import threading

    from zoo.errors import ZooError
    from zoo.store import registry

    monkeypatch.setattr(registry, "DEFER_WAIT_S", 0.1)
    with Registry.open(pg_url) as reg:
        run_id = reg.start_run(model="tinycnn", plugin="builtin", params={})
        reg.log_epoch(run_id, 1, {"train_loss": 1.0, "val_loss": 1.0})
        postgres_server.stop()
        back = threading.Timer(2.0, postgres_server.start)
        try:
            reg.log_epoch(run_id, 2, {"train_loss": 0.5, "val_loss": 0.9})  # kept: training goes on
            assert reg.pending_writes == 1 and reg.waiting_for == "connection"
            back.start()
            reg.finish_run(run_id, "completed", stop_reason="max_epochs", epochs_run=2)  # waits for the server
        finally:
            if back.is_alive() or back.ident is not None:
                back.join(timeout=90)
            else:
                postgres_server.start()
        assert reg.pending_writes == 0
        view = reg.get_run(run_id)
        assert (view.status, view.epochs_run) == ("completed", 2)
        assert [epoch for epoch, _ in reg.history(run_id)["val_loss"]] == [1, 2]
        monkeypatch.setattr(registry, "LOCK_GIVE_UP_S", 1.0)
        monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 1.0)
        postgres_server.stop()
        try:
            with pytest.raises(ZooError, match="Lost the connection to registry .* Check that the server is running"):
                reg.log_metrics(run_id, {"test_accuracy": 0.5})
        finally:
            postgres_server.start()
