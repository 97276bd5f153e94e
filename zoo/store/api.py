"""What the rest of zoo may ask of a registry: one ``typing.Protocol`` per kind of caller, listing exactly the
members that caller uses. ``Registry`` (SQLite or PostgreSQL through SQLAlchemy, zoo/store/registry.py) is the one
implementation; tests/test_architecture.py checks that it satisfies each Protocol with the same signatures, that
each caller gets by with its Protocol's members alone, and that no member is listed that its callers never use.

- ``RunStore``: reading runs (the web app and its JSON API, ``zoo report``, the read commands).
- ``StudyStore``: reading runs and ``zoo tune``'s studies (the web app): Optuna's storage opens on the registry's
  own database, so this one hands out the SQLAlchemy engine.
- ``RunRecorder``: the training service: a session writing its runs (start or claim or reopen a row, epochs,
  metrics, predictions, the end), the plan checking the artifacts folder, resume reading the run it goes on with.
- ``RunQueue``: the worker loop and ``zoo train --queue`` (a ``RunRecorder``, since a worker trains what it claims).
- ``Transactions``: the store's own modules built on the registry's write transaction (the queue table's
  functions in zoo/store/queue.py).

Imports neither SQLAlchemy nor torch at run time: annotations only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Optional, Protocol, TypeVar

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from zoo.predictions import Predictions
    from zoo.store.queue import ClaimedRun
    from zoo.store.views import RunView

T = TypeVar("T")
History = dict[str, list[tuple[int, Optional[float]]]]


class RunStore(Protocol):
    """Reading runs. ``connect()`` gives a connection for zoo.store.queries (a read transaction on SQLite)."""

    location: str  # the registry as shown in messages (a file path, or a URL without its password)
    host: str  # this machine's name: a 'running' run of another host is never judged stale by its pid

    def connect(self) -> ContextManager["Connection"]: ...

    def resolve(self, ref: Any, conn: Optional["Connection"] = None, *, deleted: bool = False) -> int: ...

    def get_run(self, ref: Any) -> "RunView": ...

    def history(self, run_id: int, keys: Optional[Iterable[str]] = None) -> History: ...


class StudyStore(RunStore, Protocol):
    """Reading runs and studies: ``zoo.tune.read_study`` / ``list_studies`` open Optuna's storage on the same
    database (the SQLite file itself, or the engine's URL; read-only through the registry's own connections)."""

    path: Optional[Path]  # the SQLite file; None for a database server (or an in-memory database)
    readonly: bool
    engine: "Engine"


class RunRecorder(Protocol):
    """The training service's registry: a session's writes, from a run's first row to its recorded end; the
    artifacts folders (the plan checks them, checkpoints go there; on a database server they must be shared,
    hence ``path`` and ``dialect``); the run ``--resume`` goes on with."""

    location: str
    host: str
    path: Optional[Path]  # the SQLite file; None for a database server (or an in-memory database)
    waiting_for: str  # what writes kept for later wait for: another process's 'lock', or the 'connection'

    @property
    def pending_writes(self) -> int: ...

    @property
    def dialect(self) -> str: ...

    @property
    def artifacts_dir(self) -> Path: ...

    def run_artifacts_dir(self, run_id: int) -> Path: ...

    def get_run(self, ref: Any) -> "RunView": ...

    def start_run(self, *, model: str, plugin: str, params: dict[str, Any], name: Optional[str] = None,
                  device: Optional[str] = None, dataset: Optional[dict] = None,
                  tags: Optional[dict[str, str]] = None) -> int: ...

    def start_claimed(self, run_id: int, **row: Any) -> int: ...

    def reopen_run(self, run_id: int, seen: "RunView") -> None: ...

    def update_run(self, run_id: int, **fields: Any) -> None: ...

    def log_epoch(self, run_id: int, epoch: int, values: dict[str, float], *, checkpoint: Optional[str] = None,
                  best_epoch: Optional[int] = None) -> None: ...

    def log_metrics(self, run_id: int, metrics: dict[str, float], *,
                    confusion: Optional[list[list[int]]] = None) -> None: ...

    def log_predictions(self, run_id: int, predictions: "Predictions") -> None: ...

    def finish_run(self, run_id: int, status: str, *, stop_reason: Optional[str] = None,
                   best_epoch: Optional[int] = None, epochs_run: Optional[int] = None,
                   checkpoint: Optional[str] = None, error: Optional[str] = None) -> None: ...


class RunQueue(RunRecorder, Protocol):
    """The queue as the training service sees it: record queued runs, claim the oldest, hand one back."""

    def queue_run(self, **row: Any) -> int: ...

    def claim_queued(self) -> Optional["ClaimedRun"]: ...

    def release_claimed(self, run_id: int) -> None: ...


class Transactions(Protocol):
    """The registry's write transaction, for the store's own modules: ``commit(write)`` runs ``write(conn)`` all or
    nothing, waiting out another process's lock; ``has_artifacts`` says an id still has a folder (never reused)."""

    location: str
    host: str

    def commit(self, write: Callable[["Connection"], T], *, defer: bool = False) -> Optional[T]: ...

    def has_artifacts(self, run_id: int) -> bool: ...


__all__ = ["RunQueue", "RunRecorder", "RunStore", "StudyStore", "Transactions"]
