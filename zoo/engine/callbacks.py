"""Callbacks: the one way the training loop talks to the world.

A callback is any object with some of these methods (every one optional; subclass ``Callback`` for no-op defaults):

- ``on_train_start(run)``: before the first epoch (after a resume's state is restored).
- ``on_epoch_start(run, epoch)``.
- ``on_batch_end(run, epoch, batch, logs)``: a few times a second (reading the loss syncs a GPU) and after the
  epoch's last batch; ``logs``: ``loss`` (running mean of the epoch), ``images_per_sec``, ``batches``.
- ``on_step_end(run, epoch, batch)``: after every optimizer step (and the schedule's step); called only when a
  callback has it (the weight EMA).
- ``on_train_epoch_end(run, epoch, logs)``: the training half of the epoch is done (before validation).
- ``on_epoch_end(run, epoch, logs)``: ``logs`` holds ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``
  (``val_accuracy`` too), ``lr``, ``seconds``, ``images_per_sec``; the built-ins add ``improved`` and
  ``best_epoch`` (early stopping) and ``checkpoint`` (the best-weights file, when it was just written). Callbacks
  are called in order and see the same dict.
- ``on_train_end(run, result)``: the run's ``TrainResult`` (test metrics included), when training returns one.
- ``state_dict()`` / ``load_state_dict(state)``: plain data (numbers, text, lists, dicts, tensors) saved in the
  run's ``last.pt`` after every epoch and given back on ``zoo train --resume``, so a resumed run's callbacks go on
  exactly as an uninterrupted run's would.

``run`` (a ``Run``) exposes ``id``, ``name``, ``model``, ``config`` (``TrainConfig``), ``artifacts_dir`` (a folder
the run may write files to; None when nothing is recorded), plus the loop's own parts (``optimizer``,
``scheduler``, ``history``...).

To end training, raise ``StopTraining`` from any hook called during training: the loop finishes the current call
round (the other callbacks still see the epoch), then ends the run with the exception's status and stop reason;
a 'completed' stop restores the best weights and tests them like early stopping does. Any other exception fails
the run (KeyboardInterrupt interrupts it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from zoo.vocab import Status, StopReason

if TYPE_CHECKING:
    import torch

    from zoo.engine.config import TrainConfig
    from zoo.engine.loop import EpochStats, TrainResult


class StopTraining(Exception):
    """Raised by a callback to end training after the current round of callbacks.

    ``reason`` is recorded as the run's stop reason (``StopReason`` values, or a word of the callback's own such as
    'pruned'); ``status`` completed (the best weights are restored and tested) or failed (``error`` is recorded,
    nothing is tested) or any other final status such as pruned (nothing is tested, the history stays): ``zoo tune``
    prunes a trial with ``StopTraining("pruned", status=Status.PRUNED, error=why)``."""

    def __init__(self, reason: str = StopReason.EARLY_STOP.value, *, status: Status = Status.COMPLETED,
                 error: Optional[str] = None) -> None:
        super().__init__(error or f"training stopped: {reason}")
        self.reason, self.status, self.error = str(reason), Status(status), error


class Callback:
    """A callback with every hook a no-op: override what you need (see the module's docstring)."""

    def on_train_start(self, run: "Run") -> None:
        pass

    def on_epoch_start(self, run: "Run", epoch: int) -> None:
        pass

    def on_batch_end(self, run: "Run", epoch: int, batch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_epoch_end(self, run: "Run", epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, run: "Run", epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run: "Run", result: "TrainResult") -> None:
        pass


@dataclass
class Run:
    """What callbacks see of the run being trained."""

    id: Optional[int]
    name: Optional[str]
    model: "torch.nn.Module"
    config: "TrainConfig"
    artifacts_dir: Optional[Path]
    classes: list[str]
    batches: int = 0  # batches per epoch
    epoch: int = 0  # the last epoch that ended
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    generator: Any = None
    history: list["EpochStats"] = field(default_factory=list)
    callbacks: "CallbackList" = None  # type: ignore[assignment]


class CallbackList:
    """Calls a hook on every callback that has it, in order. ``StopTraining`` raised by one is held until all have
    been called, then raised (a 'failed' stop wins over any other, and any other, e.g. 'pruned', over a 'completed'
    one); any other exception propagates at once."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = list(callbacks)

    def call(self, hook: str, *args: Any) -> None:
        stop: Optional[StopTraining] = None
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except StopTraining as exc:
                if stop is None or _outranks(exc.status, stop.status):
                    stop = exc
        if stop is not None:
            raise stop

    def _keys(self) -> list[str]:
        """One key per callback, stable across processes: its class name, numbered when it appears twice."""
        seen: Counter = Counter()
        keys = []
        for callback in self.callbacks:
            name = type(callback).__qualname__
            seen[name] += 1
            keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return keys

    def state_dict(self) -> dict[str, Any]:
        return {key: cb.state_dict() for key, cb in zip(self._keys(), self.callbacks) if hasattr(cb, "state_dict")}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for key, callback in zip(self._keys(), self.callbacks):
            if key in states and hasattr(callback, "load_state_dict"):
                callback.load_state_dict(states[key])


def _outranks(new: Status, held: Status) -> bool:
    """Whether a stop with status ``new`` replaces the one held: failed > any other (pruned...) > completed."""
    rank = {Status.COMPLETED: 0, Status.FAILED: 2}
    return rank.get(new, 1) > rank.get(held, 1)


class Callbacks:
    """What a progress display is told (the CLI's, a test's, a benchmark's); override any subset. ``train`` wraps
    one in the built-in ``Progress`` callback. Exceptions raised here propagate (a KeyboardInterrupt raised in one
    behaves like Ctrl-C)."""

    def on_message(self, text: str) -> None:  # e.g. how many tensors of --weights were loaded
        pass

    def on_warning(self, text: str) -> None:  # e.g. which tensors of --weights were skipped
        self.on_message(text)

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        pass

    def on_batch(self, epoch: int, batch: int, batches: int, running_loss: float, images_per_sec: float) -> None:
        pass

    def on_epoch_end(self, epoch: int, values: "EpochStats", improved: bool) -> None:
        pass

    def on_checkpoint(self, path: str, epoch: int) -> None:
        pass

    def on_test(self, metrics: dict[str, float], confusion: list[list[int]]) -> None:
        pass


class Progress(Callback):
    """Built-in: passes the run's progress to a ``Callbacks`` display (epochs, batches, checkpoints, test)."""

    def __init__(self, display: Callbacks) -> None:
        self.display = display

    def on_epoch_start(self, run: Run, epoch: int) -> None:
        self.display.on_epoch_start(epoch, run.batches)

    def on_batch_end(self, run: Run, epoch: int, batch: int, logs: dict[str, float]) -> None:
        self.display.on_batch(epoch, batch, int(logs["batches"]), logs["loss"], logs["images_per_sec"])

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        from zoo.engine.loop import EpochStats

        if logs.get("checkpoint"):
            self.display.on_checkpoint(logs["checkpoint"], epoch)
        self.display.on_epoch_end(epoch, EpochStats.from_logs(logs), bool(logs.get("improved")))

    def on_train_end(self, run: Run, result: "TrainResult") -> None:
        if result.confusion is not None:
            self.display.on_test(result.metrics, result.confusion)


__all__ = ["Callback", "Callbacks", "CallbackList", "Progress", "Run", "StopTraining"]
