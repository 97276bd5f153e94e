"""Bulk import of finished runs (``zoo import FILE.jsonl``, ``zoo import --from-mlflow``): many runs per transaction.

One record is one run, as a dict (one JSON object a line in a .jsonl file)::

    {"model": "mynet", "name": "base", "status": "completed", "data": "./photos",
     "params": {"lr": 0.01}, "tags": {"owner": "alice"}, "metrics": {"test_accuracy": 0.91},
     "history": [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}, ...],   (or {"val_loss": [[1, 1.0], ...]})
     "created": "2026-05-01T12:00:00", "started": "...", "finished": "...", "error": null, "uuid": "..."}

Only ``model`` is required. Every record is checked before anything is written, so a bad line records nothing;
then runs are inserted BATCH at a time with Core bulk inserts, their ids taken from the registry's counter in one
step per batch (ids are never reused).
"""

from __future__ import annotations

import json
import math
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from sqlalchemy import func, insert, select, update

from zoo.errors import ZooError
from zoo.store.rows import finite
from zoo.store.views import encode_param, utcnow
from zoo.vocab import FINAL_STATUSES, VAL_LOSS

if TYPE_CHECKING:
    from zoo.store.registry import Registry

BATCH = 500  # runs per transaction
FIELDS = {"model", "name", "status", "data", "params", "tags", "metrics", "history", "created", "started",
          "finished", "error", "uuid", "plugin", "host", "device", "stop_reason"}
STATUSES = tuple(s.value for s in FINAL_STATUSES)


class BadRecord(ZooError):
    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}. Nothing was imported; fix it and rerun.")


@dataclass
class Prepared:
    """One checked record, ready for insertion (everything but its id)."""

    row: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Optional[float]] = field(default_factory=dict)
    history: list[tuple[int, str, Optional[float]]] = field(default_factory=list)


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, object) for each non-blank line of a JSON Lines file."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise ZooError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRecord(where, f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def prepare(where: str, record: Any, *, now: datetime, host: Optional[str] = None) -> Prepared:
    if not isinstance(record, dict):
        raise BadRecord(where, "each line must be a JSON object with at least a \"model\"")
    unknown = set(record) - FIELDS
    if unknown:
        raise BadRecord(where, f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(sorted(FIELDS))})")
    model = record.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRecord(where, "\"model\" must be a non-empty string")
    status = record.get("status") or "completed"
    if status not in STATUSES:
        raise BadRecord(where, f"\"status\" must be one of {', '.join(STATUSES)}, not {status!r}")
    times = {key: _time(where, key, record.get(key)) for key in ("created", "started", "finished")}
    created = times["created"] or times["started"] or now
    params = _mapping(where, record, "params")
    if record.get("data") is not None:
        params.setdefault("data", record["data"])
    prepared = Prepared(
        row=dict(
            uuid=_uuid(where, record.get("uuid")), name=_opt_str(record.get("name")), model=model.strip(),
            plugin=str(record.get("plugin") or "import"), status=status, created=created,
            started=times["started"] or created, finished=times["finished"] or created,
            heartbeat=times["finished"] or created, host=_opt_str(record.get("host")) or host,
            device=_opt_str(record.get("device")), error=_opt_str(record.get("error")),
            dataset_path=_opt_str(record.get("data")), stop_reason=_opt_str(record.get("stop_reason")),
            epochs_run=None, best_epoch=None,  # every row the same keys: one executemany
        ),
        params={str(k): encode_param(v) for k, v in params.items()},
        tags={str(k): str(v) for k, v in _mapping(where, record, "tags").items()},
        metrics={str(k): _number(where, f"metrics.{k}", v) for k, v in _mapping(where, record, "metrics").items()},
        history=_history(where, record.get("history")),
    )
    epochs = {epoch for epoch, _, _ in prepared.history}
    if epochs:
        prepared.row["epochs_run"] = max(epochs)
        losses = [(value, epoch) for epoch, key, value in prepared.history if key == VAL_LOSS and value is not None]
        if losses:
            prepared.row["best_epoch"] = min(losses)[1]
    return prepared


@dataclass
class Imported:
    ids: list[int]  # the new runs, in the order of the records
    skipped: int  # records whose uuid the registry already has (imported before)


def import_runs(reg: "Registry", records: Iterable[tuple[str, Any]], *, batch: int = BATCH) -> Imported:
    """Check every (where, record), then insert them all but those already imported (same uuid)."""
    from zoo.store import tables

    now = utcnow()
    prepared = [prepare(where, record, now=now, host=reg.host) for where, record in records]
    uuids = [run.row["uuid"] for run in prepared]
    if len(set(uuids)) != len(uuids):
        raise ZooError("The same run uuid appears twice in what is imported: nothing was imported.")
    existing: set[str] = set()
    with reg.connect() as conn:
        for start in range(0, len(uuids), 900):
            chunk = uuids[start:start + 900]
            existing |= set(conn.scalars(select(tables.runs.c.uuid).where(tables.runs.c.uuid.in_(chunk))))
    fresh = [run for run in prepared if run.row["uuid"] not in existing]
    ids: list[int] = []
    for start in range(0, len(fresh), batch):
        ids += _insert(reg, fresh[start:start + batch])
    return Imported(ids=ids, skipped=len(prepared) - len(fresh))


def _insert(reg: "Registry", runs: list[Prepared]) -> list[int]:
    from zoo.store import schema

    c = schema.counters

    def write(conn) -> list[int]:
        issued = conn.scalar(select(c.c.value).where(c.c.name == "runs")) or 0
        highest = conn.scalar(select(func.max(schema.runs.c.id))) or 0
        ids, next_id = [], max(issued, highest) + 1
        for _ in runs:
            while reg.has_artifacts(next_id):  # a folder left for this id: skip it, as start_run does
                next_id += 1
            ids.append(next_id)
            next_id += 1
        if conn.scalar(select(c.c.value).where(c.c.name == "runs")) is None:
            conn.execute(insert(c).values(name="runs", value=ids[-1]))
        else:
            conn.execute(update(c).where(c.c.name == "runs").values(value=ids[-1]))
        conn.execute(insert(schema.runs), [{"id": run_id, **run.row} for run_id, run in zip(ids, runs)])
        # the long tables straight through the driver's executemany (SQLAlchemy's per-row parameter building
        # cost more than SQLite's inserts); the values are bound, never pasted into the SQL
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        for table, columns, rows in (
            ("params", "run_id, key, value", [(i, k, v) for i, r in zip(ids, runs) for k, v in r.params.items()]),
            ("tags", "run_id, key, value", [(i, k, v) for i, r in zip(ids, runs) for k, v in r.tags.items()]),
            ("metrics", "run_id, key, value", [(i, k, v) for i, r in zip(ids, runs) for k, v in r.metrics.items()]),
            ("history", "run_id, epoch, key, value", [(i, e, k, v) for i, r in zip(ids, runs) for e, k, v in r.history]),
        ):
            if rows:
                marks = ", ".join([mark] * len(rows[0]))
                conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        return ids

    return reg.commit(write)


def _mapping(where: str, record: dict, key: str) -> dict:
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRecord(where, f"\"{key}\" must be an object of name: value")
    return dict(value)


def _number(where: str, what: str, value: Any) -> Optional[float]:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(where, f"{what} must be a number, not {value!r}")
    return finite(value)


def _history(where: str, value: Any) -> list[tuple[int, str, Optional[float]]]:
    points: dict[tuple[int, str], Optional[float]] = {}
    if value is None:
        return []
    if isinstance(value, list):  # [{"epoch": 1, "train_loss": ...}, ...]
        for i, entry in enumerate(value):
            if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int) or entry["epoch"] < 1:
                raise BadRecord(where, f"history[{i}] must be an object with an \"epoch\" (1, 2, ...) and values")
            for key, v in entry.items():
                if key != "epoch":
                    points[(entry["epoch"], str(key))] = _number(where, f"history[{i}].{key}", v)
    elif isinstance(value, dict):  # {"train_loss": [[1, 0.9], [2, 0.8]], ...}
        for key, pairs in value.items():
            if not isinstance(pairs, list):
                raise BadRecord(where, f"history.{key} must be a list of [epoch, value]")
            for pair in pairs:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and pair[0] >= 1):
                    raise BadRecord(where, f"history.{key} must be a list of [epoch, value] (epochs from 1)")
                points[(pair[0], str(key))] = _number(where, f"history.{key}", pair[1])
    else:
        raise BadRecord(where, "\"history\" must be a list of per-epoch objects or an object of [epoch, value] lists")
    return [(epoch, key, v) for (epoch, key), v in points.items()]


def _time(where: str, key: str, value: Any) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)  # seconds since the epoch
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise BadRecord(where, f"\"{key}\" must be an ISO time (2026-05-01T12:00:00) or epoch seconds") from None
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def _uuid(where: str, value: Any) -> str:
    if value is None:
        return uuidlib.uuid4().hex
    try:
        return uuidlib.UUID(str(value)).hex
    except ValueError:
        raise BadRecord(where, f"\"uuid\" must be a UUID, not {value!r}") from None


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)
