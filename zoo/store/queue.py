"""The queue of runs, kept in the runs table: ``zoo train --queue`` records 'queued' rows (model, options as
params, name, tags; no process, no dataset yet), ``zoo worker`` claims them one at a time and trains each in its
own row, ``zoo requeue`` puts a stale, failed or interrupted one back.

A claim is one write transaction: the lowest queued id is selected ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two
workers never get the same row, and neither waits for the other), under SQLite's ``BEGIN IMMEDIATE`` write lock
elsewhere, and marked 'running' with the worker's host and pid before the transaction ends. Called through the
Registry methods of the same names; imports no torch.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import Connection, delete, exists, insert, select, update

from zoo.errors import UnknownName, ZooError
from zoo.store.rows import next_run_id, started_columns
from zoo.store.views import decode_param, encode_param, utcnow
from zoo.vocab import Status

if TYPE_CHECKING:
    from zoo.store.api import Transactions
    from zoo.store.views import RunView

# What a requeued run starts again from: these columns are cleared (history, metrics, evaluations are deleted).
CLEARED = ("started", "finished", "heartbeat", "host", "pid", "device", "dataset_path", "dataset_fingerprint",
           "split_fingerprint", "classes", "train_size", "val_size", "test_size", "best_epoch", "epochs_run",
           "stop_reason", "checkpoint", "error", "confusion")
REQUEUEABLE = ("stale", Status.FAILED.value, Status.INTERRUPTED.value)


@dataclass(frozen=True)
class ClaimedRun:
    """A queued run a worker now owns (its row says 'running', with the worker's host and pid)."""

    id: int
    model: str
    name: Optional[str]
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _schema():
    from zoo.store import schema

    return schema


def queue_run(reg: "Transactions", *, model: str, plugin: str, params: dict[str, Any], name: Optional[str] = None,
              tags: Optional[dict[str, str]] = None) -> int:
    schema = _schema()
    row = dict(uuid=uuidlib.uuid4().hex, name=name, model=model, plugin=plugin, status=Status.QUEUED.value,
               created=utcnow())

    def write(conn: Connection) -> int:
        run_id = next_run_id(conn, taken=reg.has_artifacts)
        conn.execute(insert(schema.runs).values(id=run_id, **row))
        _replace_params(conn, run_id, params)
        if tags:
            conn.execute(insert(schema.tags), [{"run_id": run_id, "key": str(k), "value": str(v)}
                                               for k, v in tags.items()])
        return int(run_id)

    return reg.commit(write)


def claim_run(reg: "Transactions") -> Optional[ClaimedRun]:
    schema = _schema()
    r, p, t = schema.runs, schema.params, schema.tags

    def write(conn: Connection) -> Optional[ClaimedRun]:
        in_trash = exists().where(schema.trash.c.run_id == r.c.id)  # a queued run deleted before a worker came
        run_id = conn.scalar(select(r.c.id).where(r.c.status == Status.QUEUED.value, ~in_trash).order_by(r.c.id).limit(1)
                             .with_for_update(skip_locked=True))
        if run_id is None:
            return None
        now = utcnow()
        conn.execute(update(r).where(r.c.id == run_id).values(
            status=Status.RUNNING.value, started=now, heartbeat=now, host=reg.host, pid=os.getpid()))
        model, name = conn.execute(select(r.c.model, r.c.name).where(r.c.id == run_id)).one()
        params = {k: decode_param(v) for k, v in conn.execute(select(p.c.key, p.c.value).where(p.c.run_id == run_id))}
        tags = dict(conn.execute(select(t.c.key, t.c.value).where(t.c.run_id == run_id)).all())
        return ClaimedRun(int(run_id), model, name, params, tags)

    return reg.commit(write)


def start_claimed(reg: "Transactions", run_id: int, *, model: str, plugin: str, params: dict[str, Any],
                  name: Optional[str] = None, device: Optional[str] = None, dataset: Optional[dict] = None,
                  tags: Optional[dict[str, str]] = None) -> int:
    """What ``start_run`` records, written into the claimed row: the resolved params, the dataset, the device,
    this process and these versions; the clock starts now."""
    schema = _schema()
    r, t = schema.runs, schema.tags
    now = utcnow()
    values = dict(plugin=plugin, started=now, heartbeat=now, host=reg.host, pid=os.getpid(), device=device,
                  **started_columns(dataset))

    def write(conn: Connection) -> int:
        done = conn.execute(update(r).where(r.c.id == run_id, r.c.model == model,
                                            r.c.status == Status.RUNNING.value).values(**values))
        if done.rowcount == 0:
            raise ZooError(f"Run {run_id} in registry {reg.location} is no longer this worker's (requeued or "
                           "deleted meanwhile).")
        _replace_params(conn, run_id, params)
        if tags:
            conn.execute(delete(t).where(t.c.run_id == run_id, t.c.key.in_([str(k) for k in tags])))
            conn.execute(insert(t), [{"run_id": run_id, "key": str(k), "value": str(v)} for k, v in tags.items()])
        return run_id

    return reg.commit(write)


def release_run(reg: "Transactions", run_id: int) -> None:
    """Back to 'queued' a run this worker claimed but never started (stopped while its images were decoded)."""
    r = _schema().runs
    reg.commit(lambda conn: conn.execute(
        update(r).where(r.c.id == run_id, r.c.status == Status.RUNNING.value, r.c.pid == os.getpid())
        .values(status=Status.QUEUED.value, **{c: None for c in CLEARED})))


def requeue_run(reg: "Transactions", view: "RunView") -> None:
    """Put back in the queue a run that is stale, failed or interrupted (``view``: as just read, with .stale)."""
    schema = _schema()
    r = schema.runs
    if view.display_status not in REQUEUEABLE:
        if view.status == Status.QUEUED.value:
            raise ZooError(f"Run {view.id} is already queued.")
        if view.status == Status.RUNNING.value:
            where = f" (process {view.pid} on {view.host})" if view.pid else ""
            raise ZooError(f"Run {view.id} is running{where}: only a stale, failed or interrupted run can be "
                           "requeued; stop it first.")
        raise ZooError(f"Run {view.id} is {view.display_status}: only a stale, failed or interrupted run can be "
                       "requeued (train it again with `zoo train --from "
                       f"{view.id}`).")

    def write(conn: Connection) -> None:
        done = conn.execute(update(r).where(r.c.id == view.id, r.c.status == view.status,
                                            r.c.pid.is_(None) if view.pid is None else r.c.pid == view.pid)
                            .values(status=Status.QUEUED.value, **{c: None for c in CLEARED}))
        if done.rowcount == 0:
            raise UnknownName(f"Run {view.id} changed meanwhile (or was deleted); look at it with `zoo show "
                              f"{view.id}` and try again.")
        for table in (schema.history, schema.metrics, schema.evaluations):
            conn.execute(delete(table).where(table.c.run_id == view.id))

    reg.commit(write)


def _replace_params(conn: Connection, run_id: int, params: dict[str, Any]) -> None:
    p = _schema().params
    conn.execute(delete(p).where(p.c.run_id == run_id))
    if params:
        conn.execute(insert(p), [{"run_id": run_id, "key": str(k), "value": encode_param(v)}
                                 for k, v in params.items()])
