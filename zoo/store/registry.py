"""``Registry``: opening a registry (SQLite file or SQLAlchemy URL) and the run lifecycle the engine calls.

SQLite files get WAL, a 30 s busy timeout and foreign keys on every connection (SQLite URLs too); every writing
transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing, and a writer that finds
the lock held by another process for long keeps the epochs it could not write for later (``Registry.commit``). A new
registry file is created whole and then linked into place. A read-only registry never has its data changed and is
left without -wal/-shm files beside it, also in a read-only folder (``_read_uri``). A corrupt file is one
RegistryDamaged line.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import time
import uuid as uuidlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, TypeVar

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

from zoo.errors import UnknownName, ZooError
from zoo.vocab import FINAL_STATUSES as FINAL, Status, StopReason
from zoo.store import migrations, postgres, tables
from zoo.store.views import (  # noqa: F401  (re-exported: the registry's public names)
    EvaluationView, RunView, decode_param, encode_param, pid_alive, run_duration, stale_reason, utcnow,
)
from zoo.store.rows import finite, next_run_id, opt_str, started_columns

if TYPE_CHECKING:
    from zoo.store.queue import ClaimedRun
    from zoo.predictions import Predictions

BUSY_TIMEOUT_S = 30.0
# Another process holding the write lock (see Registry.commit): a per-epoch write waits DEFER_WAIT_S, then is kept
# for later and training goes on; zoo gives up on the registry after LOCK_GIVE_UP_S without the lock: 10 min, when
# readers start to call a run without heartbeat stale (views.STALE_MIN_S).
DEFER_WAIT_S = 2.0
LOCK_GIVE_UP_S = 600.0
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_RUN_ID = 2**63 - 1  # the largest id a database integer column holds
DIGITS_PREFIX = 6  # a run reference of digits only is a run id; from this length on, also a uuid prefix
STATUSES = tuple(s.value for s in Status)
FINAL_STATUSES = tuple(s.value for s in FINAL)
STOP_REASONS = tuple(r.value for r in StopReason)
# Columns that update_run may set (identity, host/process facts and timestamps excepted, pid/host for tests).
SETTABLE = frozenset(tables.RUN_COLUMNS) - {"id", "uuid", "created"}


class Registry:
    """The run registry. Open with ``Registry.open(location)``; see BRIEF.md for the contract."""

    def __init__(self, engine: Engine, *, location: str, path: Optional[Path], readonly: bool):
        self.engine = engine
        self.location = location
        self.path = path
        self.readonly = readonly
        self.host = socket.gethostname()
        self._pending: list[Callable[[Connection], Any]] = []  # per-epoch writes waiting for the lock
        self._locked_since: Optional[float] = None  # time.monotonic() of the first write that found it locked
        self.waiting_for = "lock"  # what the pending writes wait for: another process's 'lock', or the 'connection'

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, location: str | os.PathLike, *, readonly: bool = False, create: bool = True,
             check_integrity: bool = False) -> "Registry":
        """``check_integrity``: run ``PRAGMA integrity_check`` before anything else reads or migrates the file."""
        location = str(location)
        path = _sqlite_path(location)
        if path is None:
            engine = _url_engine(location, readonly=readonly)
        else:
            _check_sqlite_file(path, readonly=readonly, create=create)
            if not readonly and not path.exists():
                _create_sqlite_file(path)
            engine = _sqlite_engine(path, readonly=readonly)
        registry = cls(engine, location=str(path) if path else _hide_password(location), path=path, readonly=readonly)
        try:
            if check_integrity:
                registry.check_integrity()
            registry._prepare()
        except BaseException:
            engine.dispose()
            raise
        return registry

    def check_integrity(self) -> None:
        """``PRAGMA integrity_check`` (SQLite): a RegistryDamaged error unless it says ok."""
        if self.engine.dialect.name != "sqlite":
            return
        try:
            with self.engine.connect() as conn:
                found = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check(5)")]
        except DBAPIError as exc:
            raise ZooError(f"Cannot read registry {self.location}: {_db_message(exc)}") from exc
        if found != ["ok"]:
            raise RegistryDamaged(self.location)

    def _prepare(self) -> None:
        latest = migrations.latest_version()
        try:
            with self.engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                version = max(migrations.applied_versions(conn), default=0) if "schema_migrations" in tables else 0
        except DBAPIError as exc:
            raise ZooError(self._open_problem(exc)) from exc
        if "schema_migrations" not in tables and tables:
            shown = ", ".join(sorted(tables)[:5])
            raise ZooError(
                f"{self.location} is a database but not a zoo registry (it has tables {shown}). "
                "Point --registry at a zoo registry or at a new file."
            )
        if version > latest:
            raise ZooError(
                f"Registry {self.location} was written by a newer zoo (schema version {version}; this zoo knows "
                f"up to {latest}). Upgrade zoo (pip install -U zoo-vision) to use it."
            )
        if version == latest:
            if not self.readonly and self.path is not None:
                try:
                    self._pragma("journal_mode", "wal")  # e.g. after compact(); a no-op check otherwise
                except sqlite3.OperationalError as exc:
                    raise ZooError(self._open_problem(exc)) from exc
            return
        if self.readonly:
            if tables and version >= migrations.READABLE_FROM:
                return  # older, but nothing the read path needs is missing; writers upgrade it
            if not tables:
                raise ZooError(f"Registry {self.location} is empty: no runs recorded yet. Train one with `zoo train`.")
            raise ZooError(
                f"Registry {self.location} has schema version {version}; this zoo needs {latest}. Read-only "
                "commands never change the file: run `zoo migrate` to upgrade it in place."
            )
        self._migrate()

    def _open_problem(self, exc: BaseException) -> str:
        """Why the registry could not be opened, as one line: a writing open in a read-only folder or on a full
        disk says so (SQLite only says 'unable to open database file')."""
        orig = getattr(exc, "orig", exc)
        reason = _db_message(exc) if isinstance(exc, DBAPIError) else str(exc)
        if self.path is not None and not self.readonly and isinstance(orig, sqlite3.OperationalError):
            return _write_problem(self.location, self.path, orig, reason)
        return f"Cannot read registry {self.location}: {reason}"

    def _migrate(self) -> list[int]:
        try:
            if self.path is not None:
                self._pragma("journal_mode", "wal")  # persistent; must run outside any transaction
            with self._write() as conn:
                postgres.lock_migrations(conn)  # many processes opening one new server database at once
                tables = set(inspect(conn).get_table_names())
                applied = migrations.applied_versions(conn) if "schema_migrations" in tables else set()
                if applied and max(applied) > migrations.latest_version():
                    raise ZooError(f"Registry {self.location} was upgraded by a newer zoo meanwhile; upgrade zoo.")
                return migrations.apply_pending(conn, applied)
        except DBAPIError as exc:
            raise ZooError(f"Cannot write registry {self.location}: {_db_message(exc)}") from exc

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return max(migrations.applied_versions(conn), default=0)

    def close(self) -> None:
        if self._pending:  # epochs still waiting for another process's lock: one last full wait
            try:
                self.commit(lambda conn: None)
            except ZooError:
                pass
            except DBAPIError:
                pass
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def artifacts_dir(self) -> Path:
        """Where checkpoints and plots go: ZOO_ARTIFACTS, else <registry dir>/<registry stem>-artifacts."""
        env = os.environ.get("ZOO_ARTIFACTS")
        if env:
            folder = Path(env).expanduser()
        elif self.path is not None:
            folder = self.path.parent / f"{self.path.stem}-artifacts"
        else:
            folder = Path("zoo-artifacts")
        if not self.readonly:
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def dialect(self) -> str:
        """The kind of database: 'sqlite', 'postgresql', ..."""
        return self.engine.dialect.name

    def run_artifacts_dir(self, run_id: int) -> Path:
        """The folder for one run's files (checkpoint, plots); ``zoo delete`` removes it. Not created here."""
        return self.artifacts_dir / f"run-{int(run_id)}"

    def compact(self) -> None:
        """Checkpoint the WAL and switch the file to rollback-journal mode, e.g. before committing it to git.

        Read-only opens of such a file create no -wal/-shm files; the next writing open turns WAL on again.
        """
        self._writable()
        if self.path is None:
            return
        self._pragma("wal_checkpoint", "TRUNCATE", call=True)
        self._pragma("journal_mode", "delete")
        self._raw("VACUUM")

    def _raw(self, sql: str) -> Any:
        """Run one statement on a driver connection outside any transaction (PRAGMA journal_mode, VACUUM)."""
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            row = cursor.fetchone()
            cursor.close()
            return row[0] if row else None
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if _damaged(exc):
                raise RegistryDamaged(self.location) from exc
            raise
        finally:
            connection.close()

    def _pragma(self, name: str, value: str, *, call: bool = False) -> None:
        if call:
            self._raw(f"PRAGMA {name}({value})")
        elif str(self._raw(f"PRAGMA {name}")).lower() != value:
            self._raw(f"PRAGMA {name} = {value}")

    # ------------------------------------------------------------------ lifecycle (called by the engine)
    def _writable(self) -> None:
        if self.readonly:
            raise ZooError(f"Registry {self.location} was opened read-only.")

    @contextmanager
    def _write(self, wait: Optional[float] = None) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: concurrent writers wait their turn, up to ``wait``
        seconds, default the busy timeout)."""
        self._writable()
        with self.engine.connect() as conn:
            conn.execution_options(zoo_write=True)
            driver = conn.connection.driver_connection if self.engine.dialect.name == "sqlite" else None
            if wait is not None and driver is not None:
                driver.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            try:
                with conn.begin():
                    yield conn
            finally:
                if wait is not None and driver is not None:
                    driver.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def commit(self, write: Callable[[Connection], T], *, defer: bool = False) -> Optional[T]:
        """Run ``write(conn)`` in a write transaction, after any writes still pending, all or nothing.

        While another process holds the write lock: a per-epoch write (``defer``: log_epoch, update_run) waits
        only DEFER_WAIT_S, then is kept in memory and returns, so training goes on; the next write records it.
        Other writes (start, metrics, finish, evaluations) retry with back-off. Either gives up (RegistryLocked)
        once the lock has been out of reach for LOCK_GIVE_UP_S; a final write still gets one full busy timeout.
        """
        self._writable()
        if defer:
            self._pending.append(write)
            writes = list(self._pending)
        else:
            writes = [*self._pending, write]
        started = time.monotonic()
        delay = 0.5
        while True:
            try:
                with self._write(DEFER_WAIT_S if defer else None) as conn:
                    results = [each(conn) for each in writes]
            except DBAPIError as exc:
                lost = postgres.connection_lost(exc)
                if not lost and not _locked(exc.orig):
                    self._pending.clear()
                    if isinstance(exc.orig, sqlite3.OperationalError):  # disk full, I/O error, read-only file
                        raise ZooError(_write_problem(self.location, self.path, exc.orig,
                                                      _db_message(exc))) from exc
                    raise
                now = time.monotonic()
                self.waiting_for = "connection" if lost else "lock"
                if self._locked_since is None:
                    self._locked_since = started
                deadline = max(self._locked_since + LOCK_GIVE_UP_S, started + BUSY_TIMEOUT_S)
                if defer and now - self._locked_since < LOCK_GIVE_UP_S:
                    return None  # kept; written with the next write
                if now >= deadline:
                    if lost:
                        raise RegistryUnreachable(self.location, now - self._locked_since,
                                                  _db_message(exc)) from None
                    raise RegistryLocked(self.location, now - self._locked_since) from None
                time.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 2, 30.0)
                continue
            except BaseException:
                self._pending.clear()  # e.g. the run was deleted meanwhile: do not replay it forever
                raise
            self._pending.clear()
            self._locked_since = None
            return results[-1]

    @property
    def pending_writes(self) -> int:
        """Per-epoch writes kept in memory because another process holds the registry's write lock."""
        return len(self._pending)

    def start_run(
        self,
        *,
        model: str,
        plugin: str,
        params: dict[str, Any],
        name: Optional[str] = None,
        device: Optional[str] = None,
        dataset: Optional[dict] = None,
        tags: Optional[dict[str, str]] = None,
    ) -> int:
        now = utcnow()
        row = dict(
            uuid=uuidlib.uuid4().hex, name=name, model=model, plugin=plugin, status="running",
            created=now, started=now, heartbeat=now, host=self.host, pid=os.getpid(), device=device,
            **started_columns(dataset),
        )
        schema = _schema()

        def write(conn: Connection) -> int:
            run_id = next_run_id(conn, taken=self.has_artifacts)
            conn.execute(insert(schema.runs).values(id=run_id, **row))
            if params:
                conn.execute(
                    insert(schema.params),
                    [{"run_id": run_id, "key": str(k), "value": encode_param(v)} for k, v in params.items()],
                )
            if tags:
                conn.execute(
                    insert(schema.tags),
                    [{"run_id": run_id, "key": str(k), "value": str(v)} for k, v in tags.items()],
                )
            return int(run_id)

        return self.commit(write)

    def has_artifacts(self, run_id: int) -> bool:
        """Whether a folder for this id is already there (a run deleted by hand, or before ids were counted)."""
        try:
            folder = self.run_artifacts_dir(run_id)
            return folder.exists() or folder.is_symlink()
        except OSError:
            return False

    def _touch(self, conn: Connection, run_id: int, **values: Any) -> None:
        runs = _schema().runs
        result = conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
        if result.rowcount == 0:
            raise UnknownName(f"No run {run_id} in registry {self.location}.")

    def log_epoch(self, run_id: int, epoch: int, values: dict[str, float], *, checkpoint: Optional[str] = None,
                  best_epoch: Optional[int] = None) -> None:
        """Record one epoch's values (replacing any logged before for that epoch) and refresh the heartbeat; with
        ``checkpoint`` and ``best_epoch`` (the epoch was the best so far), in the same transaction: a run never
        shows a best epoch whose history is missing."""
        best = {"checkpoint": opt_str(checkpoint), "best_epoch": int(best_epoch)} if best_epoch is not None else {}
        schema = _schema()
        r, h = schema.runs, schema.history
        epoch = int(epoch)
        from sqlalchemy import case, func

        rows = [{"run_id": run_id, "epoch": epoch, "key": str(k), "value": finite(v)} for k, v in values.items()]

        def write(conn: Connection) -> None:
            self._touch(
                conn, run_id, heartbeat=utcnow(),
                epochs_run=case((func.coalesce(r.c.epochs_run, 0) < epoch, epoch), else_=r.c.epochs_run), **best,
            )
            if rows:
                conn.execute(delete(h).where(h.c.run_id == run_id, h.c.epoch == epoch,
                                             h.c.key.in_([row["key"] for row in rows])))
                conn.execute(insert(h), rows)

        self.commit(write, defer=True)

    def log_epochs(self, run_id: int, epochs: dict[int, dict[str, float]]) -> None:
        """Several epochs' values in one transaction (zoo.track's batched writes); as log_epoch otherwise."""
        schema = _schema()
        r, h = schema.runs, schema.history
        from sqlalchemy import case, func, tuple_

        last = max((int(e) for e in epochs), default=0)
        rows = [{"run_id": run_id, "epoch": int(e), "key": str(k), "value": finite(v)}
                for e, values in epochs.items() for k, v in values.items()]

        def write(conn: Connection) -> None:
            self._touch(
                conn, run_id, heartbeat=utcnow(),
                epochs_run=case((func.coalesce(r.c.epochs_run, 0) < last, last), else_=r.c.epochs_run),
            )
            if rows:
                conn.execute(delete(h).where(h.c.run_id == run_id, tuple_(h.c.epoch, h.c.key).in_(
                    [(row["epoch"], row["key"]) for row in rows])))
                conn.execute(insert(h), rows)

        self.commit(write, defer=True)

    def log_metrics(
        self, run_id: int, metrics: dict[str, float], *, confusion: Optional[list[list[int]]] = None
    ) -> None:
        m = _schema().metrics
        extra = {"confusion": [[int(x) for x in row] for row in confusion]} if confusion is not None else {}
        rows = [{"run_id": run_id, "key": str(k), "value": finite(v)} for k, v in metrics.items()]

        def write(conn: Connection) -> None:
            self._touch(conn, run_id, heartbeat=utcnow(), **extra)
            if rows:
                conn.execute(delete(m).where(m.c.run_id == run_id, m.c.key.in_([row["key"] for row in rows])))
                conn.execute(insert(m), rows)

        self.commit(write)

    def log_predictions(self, run_id: int, predictions: "Predictions") -> None:
        """The run's test predictions (zoo.predictions), replacing any recorded before."""
        from zoo.predictions import FORMAT

        table = _schema().predictions
        row = {"run_id": run_id, "format": FORMAT, "count": len(predictions), "data": predictions.pack()}

        def write(conn: Connection) -> None:
            conn.execute(delete(table).where(table.c.run_id == run_id))
            conn.execute(insert(table), [row])

        self.commit(write)

    def update_run(self, run_id: int, **fields: Any) -> None:
        unknown = set(fields) - SETTABLE
        if unknown:
            raise ValueError(f"update_run cannot set {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if "checkpoint" in fields:
            fields["checkpoint"] = opt_str(fields["checkpoint"])
        if fields:  # e.g. the checkpoint of a better epoch: kept for later while another process holds the lock
            self.commit(lambda conn: self._touch(conn, run_id, **fields), defer=True)

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        stop_reason: Optional[str] = None,
        best_epoch: Optional[int] = None,
        epochs_run: Optional[int] = None,
        checkpoint: Optional[str] = None,
        error: Optional[str] = None,
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish_run status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        now = utcnow()
        values: dict[str, Any] = {"status": status, "finished": now, "heartbeat": now}
        for key, value in (("stop_reason", stop_reason), ("best_epoch", best_epoch), ("epochs_run", epochs_run),
                           ("checkpoint", opt_str(checkpoint)), ("error", error)):
            if value is not None:
                values[key] = value
        self.commit(lambda conn: self._touch(conn, run_id, **values))

    def reopen_run(self, run_id: int, seen: RunView) -> None:
        """Claim an interrupted or stale run for ``zoo train --resume``: back to 'running' in this process's name,
        only if its row still shows what ``seen`` was read as (status and owning pid/host). Of two processes
        resuming one run at once, one wins; the other gets a ZooError and changes nothing."""
        runs = _schema().runs

        def same(column, value):
            return column.is_(None) if value is None else column == value

        def write(conn: Connection) -> int:
            now = utcnow()
            claimed = conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.status == seen.status, same(runs.c.pid, seen.pid),
                                   same(runs.c.host, seen.host))
                .values(status=Status.RUNNING.value, finished=None, stop_reason=None, error=None, heartbeat=now,
                        pid=os.getpid(), host=self.host))
            return claimed.rowcount

        if self.commit(write) != 1:
            now = self.get_run(run_id)
            owner = f" (pid {now.pid} on {now.host})" if now.pid is not None else ""
            raise ZooError(f"Run {run_id} was resumed by another process meanwhile{owner}: it is "
                           f"{now.display_status} now; let that process finish, or stop it first.")

    # ------------------------------------------------------------------ the queue (zoo train --queue, zoo worker)
    def queue_run(self, **row: Any) -> int:
        """Record a run as 'queued' (model, plugin, params, name, tags) for a worker to claim; returns its id."""
        from zoo.store import queue

        return queue.queue_run(self, **row)

    def claim_queued(self) -> Optional["ClaimedRun"]:
        """The oldest queued run, now 'running' in this process's name; None when the queue is empty."""
        from zoo.store import queue

        return queue.claim_run(self)

    def start_claimed(self, run_id: int, **row: Any) -> int:
        """``start_run``, recorded in the row this process claimed instead of a new one."""
        from zoo.store import queue

        return queue.start_claimed(self, run_id, **row)

    def release_claimed(self, run_id: int) -> None:
        from zoo.store import queue

        queue.release_run(self, run_id)

    def requeue(self, ref: Any) -> int:
        """Put a stale, failed or interrupted run back in the queue (its history and metrics go); returns its id."""
        from zoo.store import queue

        view = self.get_run(ref)
        queue.requeue_run(self, view)
        return view.id

    def add_evaluation(
        self,
        run_id: int,
        metrics: dict[str, float],
        *,
        dataset: str,
        dataset_fingerprint: Optional[str],
        confusion: Optional[list[list[int]]],
        classes: list[str],
    ) -> int:
        schema = _schema()

        def write(conn: Connection) -> int:
            if conn.scalar(select(schema.runs.c.id).where(schema.runs.c.id == run_id)) is None:
                raise UnknownName(f"No run {run_id} in registry {self.location}.")
            result = conn.execute(
                insert(schema.evaluations).values(
                    run_id=run_id, created=utcnow(), dataset=str(dataset), dataset_fingerprint=dataset_fingerprint,
                    classes=list(classes),
                    confusion=[[int(x) for x in row] for row in confusion] if confusion is not None else None,
                    metrics={str(k): finite(v) for k, v in metrics.items()},
                )
            )
            return int(result.inserted_primary_key[0])

        return self.commit(write)

    # ------------------------------------------------------------------ reading
    def connect(self):
        """A connection for the query helpers in zoo.store.queries (a read transaction on SQLite)."""
        return self.engine.connect()

    def resolve(self, ref: Any, conn: Optional[Connection] = None, *, deleted: bool = False) -> int:
        """The integer id of a run given as its id (``12`` or ``#12``), its name (unique; an ambiguous one lists the
        runs that have it) or a unique prefix of its uuid; a run in the trash only when ``deleted`` (else an error
        saying how to restore it)."""
        if conn is None:
            with self.connect() as conn:
                return self.resolve(ref, conn, deleted=deleted)
        run_id = self._resolve(ref, conn)
        if not deleted:
            from zoo.store import trash

            when = trash.trashed_ids(conn, [run_id]).get(run_id)
            if when is not None:
                raise UnknownName(f"Run {run_id} is in the trash (deleted {when:%Y-%m-%d %H:%M} UTC): "
                                  f"`zoo restore {run_id}` brings it back.")
        return run_id

    def _resolve(self, ref: Any, conn: Connection) -> int:
        text = str(ref).strip().lstrip("#")
        r = tables.runs
        if text.isdigit() and int(text) <= MAX_RUN_ID:  # larger: no such run (and no 64-bit integer either)
            found = conn.scalar(select(r.c.id).where(r.c.id == int(text)))
            if found is not None:
                return int(found)
        named = list(conn.execute(select(r.c.id, r.c.model).where(r.c.name == text).order_by(r.c.id).limit(11)))
        if len(named) == 1:
            return int(named[0].id)
        if len(named) > 1:
            shown = ", ".join(f"{row.id} ({row.model})" for row in named[:10]) + (", ..." if len(named) > 10 else "")
            raise UnknownName(f"Run name '{text}' is ambiguous: runs {shown} have it. Use the run id, or give each "
                              f"run its own name with `zoo rename`.")
        prefix = text.lower().replace("-", "")
        # 2 hex characters make a uuid prefix ('2f'); digits alone are a run id, and a uuid prefix only from
        # DIGITS_PREFIX on, so that `zoo delete 99` never picks a run whose uuid happens to start with 99
        if all(c in "0123456789abcdef" for c in prefix) and len(prefix) >= (
                DIGITS_PREFIX if text.isdigit() else 2):
            ids = list(conn.scalars(select(r.c.id).where(r.c.uuid.startswith(prefix, autoescape=True)).limit(3)))
            if len(ids) == 1:
                return int(ids[0])
            if len(ids) > 1:
                raise UnknownName(f"Run '{text}' is ambiguous: it starts the uuid of several runs. Use the run id "
                                  f"or more characters of the uuid.")
        elif not text.isdigit():
            raise UnknownName(
                f"'{text}' is not a run id: give the number shown by `zoo list-runs` (or a uuid prefix of 2 hex "
                f"characters or more). No run is named '{text}' either."
            )
        raise UnknownName(f"No run '{text}' in registry {self.location}. `zoo list-runs` shows the runs.")

    def get_run(self, ref: Any) -> RunView:
        from zoo.store import queries

        with self.connect() as conn:
            run_id = self.resolve(ref, conn)
            return queries.run_views(conn, [run_id], host=self.host, full=True)[0]

    def history(self, run_id: int, keys: Optional[Iterable[str]] = None) -> dict[str, list[tuple[int, Optional[float]]]]:
        from zoo.store import queries

        with self.connect() as conn:
            return queries.histories(conn, [run_id], keys).get(run_id, {})

    def delete_runs(self, run_ids: Iterable[int], *, folder: Optional[Callable[[int], Path]] = None) -> "Deleted":
        """Delete runs (their rows cascade) and the files zoo wrote for them.

        Only zoo's own files inside this registry's artifacts folder go: in each run's ``run-<id>`` folder (a real
        folder, not a link), the checkpoint and its temporary files; the folder itself when nothing else is left
        in it. A checkpoint path recorded elsewhere, and any other file, is left in place and listed in ``kept``:
        a registry from someone else must not be able to delete the user's files. ``folder``: where a run's
        folder is instead of ``run-<id>`` (``zoo gc``: in the trash). ``zoo delete`` moves runs to the trash
        (zoo.store.trash) instead."""
        ids = [int(i) for i in run_ids]
        r = _schema().runs
        def write(conn: Connection) -> list:
            found = conn.execute(select(r.c.id, r.c.checkpoint).where(r.c.id.in_(ids))).all()
            conn.execute(delete(r).where(r.c.id.in_(ids)))
            return found

        rows = self.commit(write)
        done = Deleted()
        where = folder or self.run_artifacts_dir
        for run_id, checkpoint in rows:
            folder = where(run_id)
            own = folder.is_dir() and not folder.is_symlink() and \
                folder.resolve().parent == where(run_id).parent.resolve()
            if own:
                self._remove_run_folder(folder, done)
            if checkpoint:
                file = Path(checkpoint)
                inside = own and file.parent.resolve() == folder.resolve() and RUN_FILES.fullmatch(file.name)
                if not inside and (file.exists() or file.is_symlink()):
                    done.kept.append(file)
        return done

    @staticmethod
    def _remove_run_folder(folder: Path, done: "Deleted") -> None:
        removed = []
        for entry in sorted(folder.iterdir()):
            if RUN_FILES.fullmatch(entry.name) and (entry.is_symlink() or entry.is_file()):
                entry.unlink()  # a link named like a checkpoint: the link goes, never what it points at
                removed.append(entry)
            else:
                done.kept.append(entry)
        try:
            folder.rmdir()
            done.append(folder)
        except OSError:  # something zoo did not write is left in it
            done.extend(removed)

    # ------------------------------------------------------------------ annotating after the fact (zoo tag, note)
    def set_tags(self, run_id: int, tags: dict[str, str]) -> None:
        """Add tags to a run, replacing the values of keys it already has."""
        t, runs = _schema().tags, _schema().runs

        def write(conn: Connection) -> None:
            if conn.scalar(select(runs.c.id).where(runs.c.id == run_id)) is None:
                raise UnknownName(f"No run {run_id} in registry {self.location}.")
            if tags:
                conn.execute(delete(t).where(t.c.run_id == run_id, t.c.key.in_(list(tags))))
                conn.execute(insert(t), [{"run_id": run_id, "key": str(k), "value": str(v)} for k, v in tags.items()])

        self.commit(write)  # waits out another process's lock as training does

    def remove_tags(self, run_id: int, keys: Iterable[str]) -> list[str]:
        """Remove these tags from a run; returns the keys it had."""
        t = _schema().tags
        keys = list(keys)

        def write(conn: Connection) -> list[str]:
            had = list(conn.scalars(select(t.c.key).where(t.c.run_id == run_id, t.c.key.in_(keys))))
            conn.execute(delete(t).where(t.c.run_id == run_id, t.c.key.in_(keys)))
            return had

        had = self.commit(write)
        return [k for k in keys if k in had]


# The files zoo writes in a run's artifacts folder: the best checkpoint, and its temporary file while written.
RUN_FILES = re.compile(r"(best|last)\.pt|\.(best|last)\.pt\..+\.tmp")


class Deleted(list):
    """What ``Registry.delete_runs`` removed, as a list of paths (run folders, or single files where a folder had
    to stay), and in ``kept`` the files it left in place because zoo did not write them there."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Path] = []

    @property
    def removed(self) -> list[Path]:
        return list(self)


T = TypeVar("T")


class RegistryLocked(ZooError):
    """Another process has held the registry's write lock for longer than zoo waits (LOCK_GIVE_UP_S)."""

    def __init__(self, location: str, waited: float):
        super().__init__(
            f"Registry {location} has been locked by another process for "
            f"{f'{waited / 60:.0f} min' if waited >= 60 else f'{waited:.0f} s'} (zoo waits up to "
            f"{LOCK_GIVE_UP_S / 60:.0f} min, then gives up): finish or stop the process that holds it "
            f"(fuser {location}), then rerun."
        )


def _write_problem(location: str, path: Optional[Path], exc: sqlite3.OperationalError, reason: str) -> str:
    """A SQLite file zoo could not write, as one line saying why: a read-only file or folder, a full disk."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    folder = path.resolve().parent if path is not None else None
    if folder is not None and not os.access(folder, os.W_OK):
        return (f"Registry {location} is in a read-only folder ({folder}): a writing command needs to create "
                f"files beside it (-wal, -shm). Make the folder writable, or copy the registry to one that is; "
                f"read commands work as they are.")
    if code == 8 or (path is not None and path.exists() and not os.access(path, os.W_OK)):  # SQLITE_READONLY
        return (f"Registry {location} is read-only ({reason}): zoo cannot change it. Check the file's permissions "
                f"(or the mount), or copy it to a writable place; read commands work as they are.")
    full = ""
    try:
        if folder is not None and shutil.disk_usage(folder).free < 1 << 20:
            full = f" (the disk holding {folder} is full: free some space, then rerun)"
    except OSError:
        pass
    return f"Cannot write registry {location}: {reason}{full}."


class RegistryUnreachable(ZooError):
    """The connection to a server registry has been lost for longer than zoo retries (LOCK_GIVE_UP_S)."""

    def __init__(self, location: str, waited: float, reason: str):
        super().__init__(
            f"Lost the connection to registry {location} for "
            f"{f'{waited / 60:.0f} min' if waited >= 60 else f'{waited:.0f} s'} (zoo retries for up to "
            f"{LOCK_GIVE_UP_S / 60:.0f} min): {reason}. Check that the server is running, then rerun."
        )


def _locked(exc: Optional[BaseException]) -> bool:
    """Whether a driver error means another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


def _schema():
    """The declarative schema, imported only by writers (sqlalchemy.orm costs the read commands start-up time)."""
    from zoo.store import schema

    return schema


# Driver modules SQLAlchemy imports for a URL -> the package that provides them (pip name).
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "asyncpg": "asyncpg", "pg8000": "pg8000",
    "MySQLdb": "mysqlclient", "pymysql": "PyMySQL", "mysql": "mysql-connector-python", "mariadb": "mariadb",
    "oracledb": "oracledb", "cx_Oracle": "cx_Oracle", "pyodbc": "pyodbc", "pymssql": "pymssql",
}


def _url_engine(location: str, *, readonly: bool = False) -> Engine:
    """create_engine for a SQLAlchemy URL, with a missing driver or a bad URL as one clear ZooError."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = _hide_password(location)
    try:
        engine = create_engine(location, pool_pre_ping=True)  # a server may drop idle connections
        if engine.dialect.name == "sqlite":
            _sqlite_url_pragmas(engine, shown)
        elif engine.dialect.name == "postgresql":
            postgres.configure(engine, readonly=readonly)
        return engine
    except NoSuchModuleError:
        scheme = location.split("://", 1)[0]
        raise ZooError(
            f"Registry URL {shown}: SQLAlchemy has no database dialect '{scheme}'. Use a path to a SQLite file, "
            "or a URL such as sqlite:///runs.db or postgresql://user@host/db."
        ) from None
    except ArgumentError as exc:
        raise ZooError(
            f"Registry URL {shown} is not a valid SQLAlchemy URL ({str(exc).splitlines()[0]}): write it as "
            "dialect+driver://user@host/database, or give a file path."
        ) from None
    except ImportError as exc:
        module = (exc.name or str(exc)).split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise ZooError(
            f"Registry URL {shown} needs the database driver '{module}', which is not installed: "
            f"pip install '{package}'."
        ) from None


def _sqlite_url_pragmas(engine: Engine, location: str) -> None:
    """A SQLite database given by URL (another driver, or URL parameters) still gets foreign keys (deleting a run
    deletes its rows) and the busy timeout on every connection."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    _report_damage(engine, engine.url.database or location)


def _hide_password(location: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", location)


def _db_message(exc: DBAPIError) -> str:
    if exc.orig is not None and postgres.is_driver_error(exc.orig):
        return postgres.message(exc.orig)
    return str(exc.orig) if exc.orig is not None else str(exc).splitlines()[0]


def _check_sqlite_file(path: Path, *, readonly: bool, create: bool) -> None:
    if path.is_dir():
        raise ZooError(f"Registry {path} is a directory; give a file path such as {path / 'registry.db'}.")
    if not path.exists():
        if readonly or not create:
            raise ZooError(
                f"No registry at {path}. Train a run first (zoo train ...), or point --registry / ZOO_REGISTRY "
                "at an existing registry file."
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ZooError(f"Cannot create registry {path}: {exc.strerror or exc}.") from exc
        return
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ZooError(f"Cannot read registry {path}: {exc.strerror or exc}.") from exc
    if header and header != SQLITE_HEADER:
        raise ZooError(
            f"{path} is not a SQLite database, so not a zoo registry. Point --registry at a registry file or at "
            "a new path."
        )


def _sqlite_engine(path: Path, *, readonly: bool) -> Engine:
    uri, query_only = _read_uri(path) if readonly else (path.resolve().as_uri(), False)

    def connect() -> sqlite3.Connection:
        # isolation_level=None: the driver never starts transactions itself; the "begin" hook below does.
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)

    engine = create_engine("sqlite+pysqlite://", creator=connect, poolclass=QueuePool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if readonly or query_only:
                cursor.execute("PRAGMA query_only = ON")
            else:
                cursor.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # the pool's connect hook skips handle_error
            if _damaged(exc):
                raise RegistryDamaged(str(path)) from exc
            raise
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # Reads share a snapshot; writes take the write lock up front, waiting up to the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("zoo_write") else "BEGIN")

    _report_damage(engine, str(path))
    return engine


def _sqlite_path(location: str) -> Optional[Path]:
    """The file of a registry given as a path or a plain sqlite:/// URL; None for any other URL (opened by
    SQLAlchemy as given, see _url_engine: a SQLite one still gets foreign keys and the busy timeout)."""
    if location.startswith("sqlite:///") and location not in ("sqlite:///", "sqlite:///:memory:"):
        return None if "?" in location else Path(location[len("sqlite:///"):])
    if "://" not in location:
        return Path(location).expanduser()
    return None


def in_memory(location: str) -> bool:
    """Whether a registry location is a SQLite database that lives only as long as its connection (``sqlite://``,
    ``sqlite:///:memory:``, ``file::memory:``, ``?mode=memory``): nothing written there outlives the command."""
    text = str(location).strip()
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme.split("+", 1)[0].lower() != "sqlite":
            return False
        database = rest[1:] if rest.startswith("/") else rest
    else:
        database = text
    name, _, query = database.partition("?")
    return (name in ("", ":memory:") or name.startswith("file::memory:")
            or "mode=memory" in query.lower().replace(" ", ""))


def _create_sqlite_file(path: Path) -> None:
    """Create a new registry whole: its tables are made in a temporary file beside ``path``, which is then linked
    into place, so no reader ever sees a registry without its tables (8 trainers starting at once on a new path
    make one registry; the others' files are dropped). Where hard links are not supported, created in place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuidlib.uuid4().hex[:8]}.new")
    try:
        engine = _sqlite_engine(tmp, readonly=False)
        try:
            with engine.connect() as conn:
                conn.execution_options(zoo_write=True)
                with conn.begin():
                    migrations.apply_pending(conn, set())
        finally:
            engine.dispose()
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode = wal")  # recorded in the header; the -wal goes when it closes
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:
            pass  # no hard links here (some network or FUSE file systems): the writing open creates it in place
    except DBAPIError as exc:
        raise ZooError(f"Cannot create registry {path}: {_db_message(exc)}") from exc
    except OSError as exc:
        raise ZooError(f"Cannot create registry {path}: {exc.strerror or exc}.") from exc
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            try:
                leftover.unlink()
            except OSError:
                pass


def _wal_mode(path: Path) -> bool:
    """Whether the file's header says WAL mode (bytes 18 and 19 are 2)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def _read_uri(path: Path) -> tuple[str, bool]:
    """How a read-only command opens ``path``: (URI, whether its connections must be made query-only).

    A file in rollback-journal mode is read with ``mode=ro``, which creates nothing beside it. A WAL-mode file
    (what writers leave) needs -wal and -shm files beside it, which ``mode=ro`` would create and leave behind:
    where the file and its folder are writable it is opened read-write but query-only, so the last connection to
    close removes them again, and concurrent writers are seen through SQLite's own locking. In a read-only folder
    or mount: ``mode=ro`` when a -wal file is already there (a writer's, or a copy taken with it), else
    ``immutable=1`` (no locks, no files; nothing can write there anyway).
    """
    base = path.resolve().as_uri()
    if not _wal_mode(path):
        return base + "?mode=ro", False
    folder = path.resolve().parent
    if os.access(path, os.R_OK | os.W_OK) and os.access(folder, os.W_OK | os.X_OK) and _opens(base):
        return base, True
    if path.with_name(path.name + "-wal").exists() and _opens(base + "?mode=ro"):
        return base + "?mode=ro", False
    return base + "?immutable=1", False


def _opens(uri: str) -> bool:
    """Whether SQLite can open and read ``uri`` (a damaged file counts as opened: reading it reports the damage)."""
    try:
        con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        con.execute("PRAGMA query_only = ON")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return True
    except sqlite3.OperationalError:
        return False  # unable to open (no -shm can be made), read-only file system
    except (sqlite3.DatabaseError, UnicodeDecodeError):
        return True
    finally:
        con.close()


class RegistryDamaged(ZooError):
    """The registry file is corrupt (SQLite reports a malformed image, or not a database)."""

    def __init__(self, location: str):
        import shlex

        super().__init__(f"Registry {location} is damaged (SQLite cannot read part of the file): check it with "
                         f"sqlite3 {shlex.quote(location)} \"PRAGMA integrity_check\" and restore it from a backup.")


def _damaged(exc: BaseException) -> bool:
    """Whether a driver error means the database file itself is corrupt (SQLITE_CORRUPT, SQLITE_NOTADB), or text
    that is not UTF-8 (zoo writes nothing else; a damaged schema also garbles SQLite's own error messages)."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    if text.startswith("could not decode to utf-8"):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    return "malformed" in text or "not a database" in text


def _report_damage(engine: Engine, location: str) -> None:
    """Any statement failing because the file is corrupt raises RegistryDamaged, one clear line, wherever it runs."""

    @event.listens_for(engine, "handle_error")
    def _damage(context) -> None:
        if _damaged(context.original_exception):
            raise RegistryDamaged(location) from context.original_exception
