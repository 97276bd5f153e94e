"""``zoo.track``: record a run from your own training code, as an ordinary zoo run.

    import zoo

    with zoo.track(model="mynet", data="./photos", params={"lr": 0.01}, tags={"owner": "alice"}) as run:
        for epoch in range(1, 11):
            ...
            run.log_epoch(epoch, train_loss=tl, val_loss=vl, train_acc=ta, val_acc=va)
        run.log_metrics(test_accuracy=acc, test_f1=f1)

The run is 'running' from ``with`` on (with this process's host and pid, so a killed script reads as stale), and
when the block ends 'completed', 'interrupted' (Ctrl-C, SIGTERM) or 'failed' (any other exception, its text kept
as the run's error; the exception goes on). Epochs are kept in memory and written together, at most every
FLUSH_S seconds and when the block ends: one transaction for many values, not one per value. ``compare``,
``show``, ``plot``, ``report`` and the ui treat the run like one ``zoo train`` made. Imports no torch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from zoo.vocab import VAL_LOSS

FLUSH_S = 5.0  # at most this long between writes of the epochs logged
DEFAULT_REGISTRY = "registry.db"


class TrackedRun:
    """The handle ``zoo.track`` yields: ``id``, ``log_epoch``, ``log_metrics``, ``set_tags``."""

    def __init__(self, registry: Any, run_id: int):
        self.registry = registry
        self.id = run_id
        self._epochs: dict[int, dict[str, float]] = {}
        self._metrics: dict[str, float] = {}
        self._confusion: Optional[list[list[int]]] = None
        self._last_flush = time.monotonic()
        self._best: Optional[tuple[float, int]] = None
        self._epochs_run = 0

    def log_epoch(self, epoch: int, **values: float) -> None:
        """One epoch's values (train_loss, val_loss, train_acc, val_acc, lr, or any name); epochs start at 1."""
        epoch = int(epoch)
        if epoch < 1:
            raise ValueError(f"epochs start at 1 (got {epoch})")
        self._epochs.setdefault(epoch, {}).update({str(k): float(v) for k, v in values.items()})
        self._epochs_run = max(self._epochs_run, epoch)
        loss = values.get(VAL_LOSS)
        if loss is not None and loss == loss and (self._best is None or float(loss) < self._best[0]):
            self._best = (float(loss), epoch)
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def log_metrics(self, confusion: Optional[list[list[int]]] = None, **metrics: float) -> None:
        """Final test metrics (test_accuracy, test_f1, 'test_f1/cat' through a dict: ``**{"test_f1/cat": 0.9}``)."""
        self._metrics.update({str(k): float(v) for k, v in metrics.items()})
        if confusion is not None:
            self._confusion = [[int(x) for x in row] for row in confusion]

    def set_tags(self, **tags: Any) -> None:
        self.registry.set_tags(self.id, {k: str(v) for k, v in tags.items()})

    def flush(self) -> None:
        """Write what was logged so far, in one transaction."""
        if self._epochs:
            self.registry.log_epochs(self.id, self._epochs)
            self._epochs = {}
        self._last_flush = time.monotonic()

    def _finish(self, status: str, *, error: Optional[str] = None, stop_reason: str) -> None:
        self.flush()
        if self._metrics or self._confusion is not None:
            self.registry.log_metrics(self.id, self._metrics, confusion=self._confusion)
        self.registry.finish_run(self.id, status, stop_reason=stop_reason, error=error,
                                 epochs_run=self._epochs_run or None, best_epoch=self._best[1] if self._best else None)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived inside a ``zoo.track`` block (recorded as 'interrupted', then raised on)."""


class track:
    """Context manager recording one run; see the module docstring. ``registry``: a path or SQLAlchemy URL (default
    ZOO_REGISTRY, else ./registry.db)."""

    def __init__(self, model: str, data: Optional[str] = None, params: Optional[Mapping[str, Any]] = None,
                 tags: Optional[Mapping[str, Any]] = None, *, name: Optional[str] = None,
                 registry: Optional[str | os.PathLike] = None, device: Optional[str] = None):
        self.model = model
        self.data = None if data is None else str(data)
        self.params = dict(params or {})
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.name = name
        self.location = str(registry or os.environ.get("ZOO_REGISTRY") or DEFAULT_REGISTRY)
        self.device = device
        self.run: Optional[TrackedRun] = None
        self._registry: Any = None
        self._previous_handler: Any = None

    def __enter__(self) -> TrackedRun:
        from zoo.store import Registry

        self._registry = Registry.open(self.location)
        params = dict(self.params)
        dataset = None
        if self.data is not None:
            params.setdefault("data", self.data)
            path = Path(self.data).expanduser()
            dataset = {"path": str(path.resolve()) if path.exists() else self.data}
        try:
            run_id = self._registry.start_run(model=self.model, plugin="zoo.track", params=params, name=self.name,
                                              device=self.device, dataset=dataset, tags=self.tags)
        except BaseException:
            self._registry.close()
            raise
        self.run = TrackedRun(self._registry, run_id)
        self._catch_sigterm()
        return self.run

    def __exit__(self, kind: Any, exc: Optional[BaseException], tb: Any) -> bool:
        self._release_sigterm()
        try:
            if exc is None:
                self.run._finish("completed", stop_reason="max_epochs")
            elif isinstance(exc, KeyboardInterrupt):
                self.run._finish("interrupted", stop_reason="interrupted",
                                 error="SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt")
            else:
                self.run._finish("failed", stop_reason="error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._registry.close()
        return False  # the exception, if any, goes on

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            raise Terminated()

        try:
            self._previous_handler = signal.signal(signal.SIGTERM, handler)
        except (ValueError, OSError):
            self._previous_handler = None

    def _release_sigterm(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None
