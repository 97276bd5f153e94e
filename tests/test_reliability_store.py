"""The registry under hostile or unlucky conditions (issue 11): read-only folders, URLs, damaged files, deletes
outside the artifacts folder, a writer holding the lock, full disks, reused pids, concurrent creation.

Real SQLite files throughout; the CLI through CliRunner or a subprocess."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from zoo.store import Registry


def registry_path() -> Path:
    return Path(os.environ["ZOO_REGISTRY"])


def add_run(reg: Registry, model: str = "tinycnn", *, epochs: int = 2, status: str = "completed") -> int:
    run_id = reg.start_run(model=model, plugin="builtin", params={"lr": 0.01, "epochs": epochs}, device="cpu",
                           tags={"exp": "a"}, dataset={"path": "/data", "classes": ["cat", "dog"]})
    for epoch in range(1, epochs + 1):
        reg.log_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "seconds": 1.0})
    reg.log_metrics(run_id, {"test_accuracy": 0.5 + run_id / 100, "test_loss": 0.7}, confusion=[[1, 1], [0, 2]])
    if status != "running":
        reg.finish_run(run_id, status, stop_reason="max_epochs", best_epoch=epochs, epochs_run=epochs)
    return run_id


def filled_registry(n: int = 3) -> list[int]:
    with Registry.open(registry_path()) as reg:
        return [add_run(reg) for _ in range(n)]


def zoo(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def one_line_error(done, fragment: str) -> str:
    """The command failed with exit 1 and one 'Error:' line containing ``fragment``; returns that line."""
    output = getattr(done, "stderr", None) or getattr(done, "output", "")
    code = getattr(done, "returncode", getattr(done, "exit_code", None))
    assert code == 1, output
    assert "Traceback" not in output and "Unexpected" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert fragment in lines[0], output
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def run_read_only(target: Path, *args: str) -> subprocess.CompletedProcess:
    """``zoo ARGS`` with ``target`` (a folder or the registry file) read-only: chmod for a normal user; for root (who
    ignores modes) a read-only bind mount in a private mount namespace, skipped where that is not allowed."""
    if os.geteuid() != 0:
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o444)
        try:
            return zoo(*args)
        finally:
            target.chmod(mode)
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: no way to make a path read-only")
    q = shlex.quote(str(target))
    script = f"mount --bind {q} {q} && mount -o remount,bind,ro {q} || exit 77; exec \"$@\""
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "zoo", *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 77:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    return done


# ----------------------------------------------------------------------------- 1: read-only folders, no side files
def test_read_commands_leave_no_wal_or_shm_files_beside_the_registry(cli):
    ids = filled_registry()
    folder = registry_path().parent
    before = snapshot(folder)
    assert not any(name.endswith(("-wal", "-shm")) for name in before)
    for args in (("list-runs",), ("show", ids[0]), ("compare",), ("list-runs", "--format", "json")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    assert snapshot(folder) == before


def test_read_commands_work_in_a_read_only_folder_and_change_nothing(tmp_path):
    ids = filled_registry()
    folder = registry_path().parent
    with open(registry_path(), "rb") as handle:
        assert handle.read(20)[18] == 2  # written in WAL mode, as zoo train leaves it
    before = snapshot(folder)
    listed = run_read_only(folder, "list-runs", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(run["id"] for run in __import__("json").loads(listed.stdout)) == ids
    shown = run_read_only(folder, "show", ids[-1])
    assert shown.returncode == 0 and "completed" in shown.stdout, shown.stderr
    compared = run_read_only(folder, "compare", "--format", "csv")
    assert compared.returncode == 0 and compared.stdout.count("\n") == 4, compared.stderr
    elsewhere = Path(tempfile.mkdtemp())
    try:
        plotted = run_read_only(folder, "plot", "-o", elsewhere / "losses.png")
        assert plotted.returncode == 0 and (elsewhere / "losses.png").stat().st_size > 0, plotted.stderr
    finally:
        shutil.rmtree(elsewhere)
    assert snapshot(folder) == before


def test_a_read_only_folder_with_a_writers_wal_still_shows_its_latest_rows(tmp_path):
    """A copy taken while a writer had it open (-wal and -shm beside it): read with them, not immutably."""
    filled_registry(1)
    source = registry_path()
    copy = tmp_path / "archive"
    copy.mkdir()
    holder = sqlite3.connect(source)
    holder.execute("SELECT count(*) FROM runs").fetchone()  # a writer's connection stays open: -wal, -shm stay
    with Registry.open(source) as reg:
        late = add_run(reg, "latecomer")
    for suffix in ("", "-wal", "-shm"):
        shutil.copy2(f"{source}{suffix}", copy / f"registry.db{suffix}")
    holder.close()
    before = snapshot(copy)
    os.environ["ZOO_REGISTRY"] = str(copy / "registry.db")  # the autouse fixture restores it
    done = run_read_only(copy, "show", late)
    assert done.returncode == 0 and "latecomer" in done.stdout, done.stderr
    assert snapshot(copy) == before


# ----------------------------------------------------------------------------- 14: foreign keys whatever the URL
@pytest.mark.parametrize("scheme", ["sqlite+pysqlite:///{}", "sqlite:///{}?timeout=20"])
def test_delete_through_any_sqlite_url_leaves_no_orphan_rows(cli, scheme):
    ids = filled_registry(2)
    url = scheme.format(registry_path())
    with Registry.open(url) as reg:
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    result = cli("--registry", url, "delete", ids[0], "--yes")
    assert result.exit_code == 0, result.output
    result = cli("--registry", url, "gc", "--yes")  # out of the trash for good
    assert result.exit_code == 0, result.output
    con = sqlite3.connect(registry_path())
    for table in ("params", "history", "metrics", "tags"):
        assert con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (ids[0],)).fetchone()[0] == 0, table
        assert con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (ids[1],)).fetchone()[0] > 0, table
    con.close()


# ----------------------------------------------------------------------------- 4: delete removes only zoo's own files
def test_delete_never_removes_a_checkpoint_path_outside_the_artifacts_folder(cli, tmp_path):
    ids = filled_registry(3)
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    with Registry.open(registry_path()) as reg:
        reg.update_run(ids[0], checkpoint=str(precious))  # a shared or downloaded registry can say anything
        other = reg.run_artifacts_dir(ids[1])
        other.mkdir(parents=True)
        (other / "best.pt").write_bytes(b"run 2's checkpoint")
        reg.update_run(ids[2], checkpoint=str(other / "best.pt"))  # another run's file
    assert cli("delete", ids[0], ids[2], "--yes").exit_code == 0  # to the trash; gc removes files for good
    result = cli("gc", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted 2 runs for good." in result.stdout
    assert precious.read_text() == "years of work" and (other / "best.pt").exists()
    assert "Left in place" in result.output and "thesis.tex" in result.output


def test_delete_removes_the_checkpoint_but_not_other_files_or_link_targets(cli, tmp_path):
    ids = filled_registry(2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "best.pt").write_bytes(b"not this registry's")
    with Registry.open(registry_path()) as reg:
        mine = reg.run_artifacts_dir(ids[0])
        mine.mkdir(parents=True)
        (mine / "best.pt").write_bytes(b"zoo checkpoint")
        (mine / ".best.pt.123.tmp").write_bytes(b"half")
        (mine / "notes.txt").write_text("mine, not zoo's")
        reg.update_run(ids[0], checkpoint=str(mine / "best.pt"))
        reg.run_artifacts_dir(ids[1]).symlink_to(elsewhere, target_is_directory=True)
        reg.update_run(ids[1], checkpoint=str(reg.run_artifacts_dir(ids[1]) / "best.pt"))
    assert cli("delete", *ids, "--yes").exit_code == 0  # mine moves to the trash, the link stays
    mine = mine.parent / ".trash" / mine.name
    result = cli("gc", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (elsewhere / "best.pt").read_bytes() == b"not this registry's"
    assert "notes.txt" in result.output and "2 artifact files" in result.stdout


def test_delete_of_an_ordinary_run_removes_its_folder(cli):
    ids = filled_registry(1)
    with Registry.open(registry_path()) as reg:
        folder = reg.run_artifacts_dir(ids[0])
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"zoo checkpoint")
        reg.update_run(ids[0], checkpoint=str((folder / "best.pt").resolve()))
    result = cli("delete", ids[0], "--yes")
    assert result.exit_code == 0 and "Deleted 1 run and 1 artifact folder:" in result.stdout, result.output
    assert not folder.exists()
    result = cli("gc", "--yes")
    assert result.exit_code == 0 and "Deleted 1 run for good and 1 artifact folder." in result.stdout, result.output
    assert not (folder.parent / ".trash" / folder.name).exists() and "Left in place" not in result.output


# ----------------------------------------------------------------------------- 12: damaged files
def damage(path: Path, pages: list[int]) -> None:
    """Overwrite whole pages (4096 bytes, page 1 being the first) with garbage; page 1 keeps its 100-byte header."""
    import random

    rng = random.Random(7)
    with open(path, "r+b") as handle:
        for page in pages:
            start = (page - 1) * 4096 + (100 if page == 1 else 0)
            handle.seek(start)
            handle.write(bytes(rng.randrange(256) for _ in range(4096 * page - start)))


def damaged_registry(pages: list[int]) -> Path:
    with Registry.open(registry_path()) as reg:
        for _ in range(30):
            run_id = reg.start_run(model="m", plugin="p", params={f"k{j}": "x" * 50 for j in range(20)})
            for epoch in range(1, 10):
                reg.log_epoch(run_id, epoch, {"val_loss": 1.0 / epoch, "train_loss": 2.0})
            reg.log_metrics(run_id, {"test_accuracy": 0.5})
            reg.finish_run(run_id, "completed")
    assert registry_path().stat().st_size > 30 * 4096
    damage(registry_path(), pages)
    return registry_path()


@pytest.mark.parametrize("pages", [[6, 13], [1]], ids=["data-pages", "schema-page"])
def test_a_damaged_registry_is_one_clear_line_for_every_command(cli, pages):
    path = damaged_registry(pages)
    expected = f'sqlite3 {path} "PRAGMA integrity_check"'
    for args in (("list-runs",), ("show", "3"), ("compare",), ("delete", "2", "--yes"), ("migrate",)):
        result = cli(*args)
        line = one_line_error(result, "is damaged")
        assert expected in line, (args, line)


def test_migrate_checks_integrity_before_anything_else(cli):
    path = damaged_registry([6, 13])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = cli("migrate")
    one_line_error(result, "is damaged")
    assert "schema version" not in result.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# ----------------------------------------------------------------------------- 11: another process holds the lock
HOLD_LOCK = ("import sqlite3, sys, time\n"
             "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "con.execute('BEGIN IMMEDIATE')\n"
             "print('locked', flush=True)\n"
             "time.sleep(float(sys.argv[2]))\n"
             "con.execute('COMMIT')\n")


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the registry's write lock and keeps it for ``seconds``."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def epochs_recorded(path: Path, run_id: int) -> list[int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in con.execute("SELECT DISTINCT epoch FROM history WHERE run_id = ? ORDER BY epoch",
                                              (run_id,))]
    finally:
        con.close()


def test_a_long_write_lock_elsewhere_does_not_stop_training_and_epochs_are_written_later(monkeypatch):
    from zoo.store import registry

    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 1.0)  # the lock is held longer than the busy timeout
    monkeypatch.setattr(registry, "DEFER_WAIT_S", 0.1)
    path = registry_path()
    with Registry.open(path) as reg:
        run_id = reg.start_run(model="tinycnn", plugin="builtin", params={})
        holder = hold_lock(path, 3.0)
        started = time.monotonic()
        for epoch in (1, 2):
            reg.log_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 1.0})
            reg.update_run(run_id, checkpoint="best.pt", best_epoch=epoch)
        assert time.monotonic() - started < 1.5  # training went on without waiting for the lock
        assert reg.pending_writes == 4 and epochs_recorded(path, run_id) == []
        holder.wait(timeout=30)
        reg.log_epoch(run_id, 3, {"train_loss": 0.3, "val_loss": 0.9})
        assert reg.pending_writes == 0 and epochs_recorded(path, run_id) == [1, 2, 3]
        reg.finish_run(run_id, "completed", stop_reason="max_epochs")
    with Registry.open(path, readonly=True) as reg:
        view = reg.get_run(run_id)
    assert (view.status, view.epochs_run, view.best_epoch, view.checkpoint) == ("completed", 3, 2, "best.pt")


def test_final_writes_wait_for_the_lock_with_back_off(monkeypatch):
    from zoo.store import registry

    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.5)
    path = registry_path()
    with Registry.open(path) as reg:
        run_id = reg.start_run(model="tinycnn", plugin="builtin", params={})
        holder = hold_lock(path, 2.0)
        reg.finish_run(run_id, "completed", stop_reason="max_epochs")  # several busy timeouts later: written
        holder.wait(timeout=30)
        assert reg.get_run(run_id).status == "completed"


def test_zoo_gives_up_on_a_registry_locked_past_the_stated_limit(monkeypatch):
    from zoo.store import registry

    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(registry, "DEFER_WAIT_S", 0.1)
    monkeypatch.setattr(registry, "LOCK_GIVE_UP_S", 1.0)
    path = registry_path()
    with Registry.open(path) as reg:
        run_id = reg.start_run(model="tinycnn", plugin="builtin", params={})
        holder = hold_lock(path, 8.0)
        try:
            with pytest.raises(registry.RegistryLocked, match="locked by another process") as raised:
                for epoch in range(1, 100):
                    reg.log_epoch(run_id, epoch, {"train_loss": 1.0})
                    time.sleep(0.2)
            assert epoch > 3 and "zoo waits up to" in str(raised.value)
        finally:
            holder.kill()
            holder.wait()


# ----------------------------------------------------------------------------- 5: full disk while saving a checkpoint
def open_files_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_a_checkpoint_that_does_not_fit_is_closed_before_it_is_removed(tmp_path):
    import resource
    import signal

    import torch

    from zoo.checkpoint import save_checkpoint
    from zoo.errors import ZooError

    target = tmp_path / "run-1" / "best.pt"
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # like a disk with 50 kB left
    try:
        with pytest.raises(ZooError) as raised:
            save_checkpoint(target, model="tinycnn", plugin="builtin", classes=["a", "b"], image_size=16,
                            state_dict={"w": torch.randn(200, 200)}, epoch=1, mean=[0.5] * 3, std=[0.2] * 3)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert open_files_under(tmp_path) == []  # closed while the error is still alive, not at garbage collection
    assert list(target.parent.iterdir()) == []
    assert str(raised.value).startswith(f"Cannot write checkpoint {target}: File too large")


def test_a_full_disk_ends_the_run_failed_with_the_reason_and_frees_the_space(tmp_path, make_images):
    """A real full disk: a 448 kB tmpfs holds the registry and artifacts; tinycnn's checkpoint (~375 kB) does not
    fit beside them. Root only (a private mount namespace), skipped elsewhere."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    data = make_images({"cat": 10, "dog": 10}, size=16)
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    q = shlex.quote
    script = (f"mount -t tmpfs -o size=448k zoo-full {q(str(disk))} || exit 77; "
              f"{q(sys.executable)} -m zoo train tinycnn --data {q(str(data))} --epochs 1 --image-size 16 "
              f"--batch-size 8 -q > {q(str(out / 'train.out'))} 2>&1; echo $? > {q(str(out / 'rc'))}; "
              f"ls -a {q(str(disk))}/registry-artifacts/run-1 > {q(str(out / 'ls'))} 2>&1; "
              f"df -k --output=avail {q(str(disk))} | tail -1 > {q(str(out / 'avail'))}; "
              f"cp {q(str(disk))}/registry.db* {q(str(out))}/")
    env = {**os.environ, "ZOO_REGISTRY": str(disk / "registry.db"), "ZOO_CACHE_MEMORY": "64M"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)
    if done.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    train_out = (out / "train.out").read_text()
    assert (out / "rc").read_text().strip() == "1", train_out
    assert "Traceback" not in train_out and "Unexpected" not in train_out, train_out
    assert "No space left on device" in train_out, train_out
    assert (out / "ls").read_text().split() == [".", ".."], train_out  # no half-written checkpoint left
    assert int((out / "avail").read_text()) > 448 // 2  # its space came back (the registry takes ~90 kB)
    con = sqlite3.connect(out / "registry.db")
    status, error = con.execute("SELECT status, error FROM runs").fetchone()
    con.close()
    assert status == "failed" and "No space left on device" in error, (status, error)


# ----------------------------------------------------------------------------- 16: ids after a schema-1 upgrade
def schema_1_registry_with_run_3_deleted(*, foreign_keys: bool, keep_folder: bool) -> None:
    """Runs 1-3 recorded, then run 3 deleted before the registry is upgraded from schema version 1: through a
    connection without foreign keys (its rows stay) or with them (rows cascade), its folder kept or not."""
    with Registry.open(registry_path()) as reg:
        for _ in range(3):
            add_run(reg)
        folder = reg.run_artifacts_dir(3)
        if keep_folder:
            folder.mkdir(parents=True)
            (folder / "best.pt").write_bytes(b"run 3's weights")
    con = sqlite3.connect(registry_path(), isolation_level=None)
    con.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    con.execute("DELETE FROM runs WHERE id = 3")
    con.execute("DROP TABLE counters")
    con.execute("DELETE FROM schema_migrations WHERE version > 1")
    con.close()


@pytest.mark.parametrize("foreign_keys, keep_folder", [(False, False), (True, True)],
                         ids=["rows-left", "folder-left"])
def test_a_registry_upgraded_from_schema_1_does_not_reuse_a_deleted_run_id(foreign_keys, keep_folder):
    schema_1_registry_with_run_3_deleted(foreign_keys=foreign_keys, keep_folder=keep_folder)
    with Registry.open(registry_path()) as reg:  # the writing open upgrades it
        assert reg.schema_version() >= 2
        new = reg.start_run(model="tinycnn", plugin="builtin", params={})
        assert new == 4
        if keep_folder:
            assert (reg.run_artifacts_dir(3) / "best.pt").read_bytes() == b"run 3's weights"


# ----------------------------------------------------------------------------- 16: 8 trainers create a registry
CREATE_AND_START = ("import sys, time\n"
                    "from pathlib import Path\n"
                    "from zoo.store import Registry\n"
                    "go = Path(sys.argv[2])\n"
                    "while not go.exists(): time.sleep(0.002)\n"
                    "with Registry.open(sys.argv[1]) as reg:\n"
                    "    reg.start_run(model='tinycnn', plugin='builtin', params={})\n")


def test_a_registry_being_created_by_8_trainers_never_reads_as_empty(tmp_path):
    from zoo.errors import ZooError

    path, go = registry_path(), tmp_path / "go"
    creators = [subprocess.Popen([sys.executable, "-c", CREATE_AND_START, str(path), str(go)]) for _ in range(8)]
    time.sleep(1.0)  # all of them imported and waiting
    go.touch()
    seen, deadline = set(), time.monotonic() + 60
    while any(p.poll() is None for p in creators) and time.monotonic() < deadline:
        try:
            with Registry.open(path, readonly=True) as reg, reg.connect() as conn:
                seen.add(conn.exec_driver_sql("SELECT count(*) FROM runs").scalar())
        except ZooError as exc:
            assert exc.message.startswith("No registry at"), exc.message  # not there yet; never half made
            seen.add("missing")
    assert [p.wait(timeout=60) for p in creators] == [0] * 8
    with Registry.open(path, readonly=True) as reg, reg.connect() as conn:
        assert sorted(conn.exec_driver_sql("SELECT id FROM runs").scalars()) == list(range(1, 9))
    assert len(seen) > 1  # the reads really overlapped the creation
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".new")]


# ----------------------------------------------------------------------------- 16: a reused pid
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times come from /proc (Linux)")
def test_a_dead_run_whose_pid_was_reused_is_stale_and_can_be_deleted(cli):
    ids = filled_registry(2)
    newcomer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        con = sqlite3.connect(registry_path(), isolation_level=None)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        hour_ago, minute_ago = (str(now - timedelta(hours=1)), str(now - timedelta(minutes=1)))
        # run 1 started an hour ago and died a minute ago; its pid now belongs to a process started just now
        con.execute("UPDATE runs SET status = 'running', finished = NULL, pid = ?, created = ?, started = ?, "
                    "heartbeat = ? WHERE id = ?", (newcomer.pid, hour_ago, hour_ago, minute_ago, ids[0]))
        # run 2 is really alive: this very process, which started before it
        con.execute("UPDATE runs SET status = 'running', finished = NULL, pid = ? WHERE id = ?", (os.getpid(), ids[1]))
        con.close()
        statuses = {run["id"]: run["status"] for run in __import__("json").loads(cli("list-runs", "--format",
                                                                                      "json").stdout)}
        assert statuses == {ids[0]: "stale", ids[1]: "running"}
        assert cli("delete", ids[0], "--yes").exit_code == 0
        one_line_error(cli("delete", ids[1], "--yes"), "still running")
    finally:
        newcomer.kill()
        newcomer.wait()


@pytest.mark.slow
def test_zoo_train_goes_on_while_another_process_holds_the_registry_lock(cli, make_images, monkeypatch):
    """The real command: once the first epoch is recorded, another process takes the lock and holds it past the
    (shortened) busy timeout while more epochs end; the training completes and every epoch is recorded later."""
    import threading

    from zoo.store import registry

    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(registry, "DEFER_WAIT_S", 0.05)
    data = make_images({"cat": 10, "dog": 10}, size=16)
    path = registry_path()
    seen = {}

    def epochs_run() -> int:
        try:
            con = sqlite3.connect(path)
            try:
                row = con.execute("SELECT max(epochs_run) FROM runs").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return 0
        return (row and row[0]) or 0

    def lock_after_the_first_epoch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and epochs_run() < 1:
            time.sleep(0.01)
        holder = hold_lock(path, 2.0)
        seen["locked at epoch"] = epochs_run()
        holder.wait()

    watcher = threading.Thread(target=lock_after_the_first_epoch, daemon=True)
    watcher.start()
    result = cli("train", "tinycnn", "--data", data, "--epochs", "16", "--image-size", "16", "--batch-size", "8",
                 "--patience", "50")
    watcher.join(timeout=60)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("tinycnn epoch")]
    assert seen["locked at epoch"] < 16 and len(lines) == 16  # epochs went on ending while it was locked
    with Registry.open(path, readonly=True) as reg:
        view = reg.get_run(1)
        history = reg.history(1)
    assert view.status == "completed" and view.epochs_run == 16, (view.status, view.error)
    assert [epoch for epoch, _ in history["val_loss"]] == list(range(1, 17))


def overwrite(path: Path, needle: bytes, replacement: bytes) -> None:
    data = path.read_bytes()
    assert data.count(needle) >= 1, needle
    path.write_bytes(data.replace(needle, replacement))


@pytest.mark.parametrize("needle, commands", [
    (b"tablerunsruns", ("list-runs", "show", "compare", "migrate")),  # a table's name in the schema: page 1
    (b"findme-model", ("list-runs", "show", "compare")),  # a value (integrity_check does not read text)
], ids=["schema-name", "row-text"])
def test_text_that_is_not_utf8_is_damage_too(cli, needle, commands):
    with Registry.open(registry_path()) as reg:
        add_run(reg, "findme-model")
        reg.compact()  # one file, no WAL: the bytes below are all in it
    overwrite(registry_path(), needle, needle[:6] + b"\xff\xfe\xa9" + needle[9:])
    for command in commands:
        one_line_error(cli(command, *(["1"] if command == "show" else [])), "is damaged")


def test_a_registry_write_on_a_full_disk_is_one_clear_error(tmp_path):
    import resource
    import signal

    from zoo.errors import ZooError

    with Registry.open(registry_path()) as reg:
        run_id = reg.start_run(model="tinycnn", plugin="builtin", params={})
        sizes = [p.stat().st_size for p in registry_path().parent.iterdir() if p.is_file()]
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), hard))  # no file may grow: the disk is full
        try:
            with pytest.raises(ZooError, match="Cannot write registry .*: (database or disk is full|disk I/O error)"):
                reg.log_metrics(run_id, {f"test_f1/class{i}": 0.5 for i in range(2000)})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        assert reg.pending_writes == 0
        reg.finish_run(run_id, "failed", error="the disk was full")  # space again: recorded
        assert reg.get_run(run_id).status == "failed"


# ----------------------------------------------------------------------------- issue 17: annotating, locked or read-only
def test_tag_note_and_delete_wait_for_a_lock_then_give_up_in_one_line(cli, monkeypatch):
    from zoo.store import registry

    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(registry, "LOCK_GIVE_UP_S", 30.0)
    ids = filled_registry(2)
    holder = hold_lock(registry_path(), 1.5)  # held past one busy timeout, well within giving up: waited out
    tagged = cli("tag", ids[0], "k=v")
    assert tagged.exit_code == 0, tagged.output
    holder.wait(timeout=30)
    with Registry.open(registry_path(), readonly=True) as reg:
        assert reg.get_run(ids[0]).tags["k"] == "v"
    monkeypatch.setattr(registry, "LOCK_GIVE_UP_S", 1.0)
    holder = hold_lock(registry_path(), 60)  # held past giving up: one line
    try:
        for args in (("tag", ids[0], "k=w"), ("note", ids[0], "hello"), ("delete", ids[1], "--yes")):
            line = one_line_error(cli(*args), "locked by another process")
            assert "SQL" not in line and "OperationalError" not in line
    finally:
        holder.kill()
        holder.wait()
    with Registry.open(registry_path(), readonly=True) as reg:
        assert reg.get_run(ids[0]).tags["k"] == "v" and reg.get_run(ids[1]).id == ids[1]  # nothing changed


def test_writing_to_a_read_only_file_or_folder_says_which(cli):
    ids = filled_registry(1)
    path = registry_path()
    for args in (("tag", ids[0], "k=v"), ("note", ids[0], "hi"), ("delete", ids[0], "--yes")):
        line = one_line_error(run_read_only(path, *args), "is read-only")
        assert "Unexpected" not in line and "SQL" not in line
        one_line_error(run_read_only(path.parent, *args), "is in a read-only folder")
    with Registry.open(path, readonly=True) as reg:
        assert "k" not in reg.get_run(ids[0]).tags
