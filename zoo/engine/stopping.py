"""Built-in callbacks that end training: early stopping on the validation loss, and the NaN guard."""

from __future__ import annotations

import math
from typing import Any

from zoo.engine.callbacks import Callback, Run, StopTraining
from zoo.vocab import Status, StopReason


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a validation loss ``min_delta`` below the best one. Adds
    ``improved`` and ``best_epoch`` to the epoch's logs (the checkpoint and the display read them)."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best_loss, self.best_epoch, self.waited = math.inf, None, 0

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        improved = logs["val_loss"] < self.best_loss - self.min_delta
        if improved:
            self.best_loss, self.best_epoch, self.waited = logs["val_loss"], epoch, 0
        else:
            self.waited += 1
        logs["improved"], logs["best_epoch"] = improved, self.best_epoch
        if not improved and self.waited >= self.patience:
            raise StopTraining(StopReason.EARLY_STOP.value)

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), state["best_epoch"]
        self.waited = int(state["waited"])


class NanGuard(Callback):
    """Fails the run when the training loss (checked as it is shown, and over the epoch) or the validation loss
    is NaN or infinite, with advice: a lower --lr, and fp32 when the run was not already in fp32."""

    def __init__(self, precision: str, every_batch: bool = True) -> None:
        self.remedy = "try a lower --lr" + (" or --precision fp32" if precision in ("bf16", "fp16") else "") + "."
        self.every_batch = every_batch  # under torchrun the ranks stop together, at the epoch's end

    def _fail(self, what: str) -> None:
        raise StopTraining(StopReason.NAN_LOSS.value, status=Status.FAILED, error=f"{what}; {self.remedy}")

    def on_batch_end(self, run: Run, epoch: int, batch: int, logs: dict[str, float]) -> None:
        if self.every_batch and not math.isfinite(logs["loss"]):
            self._fail(f"The training loss became {logs['loss']} in epoch {epoch} (batch {batch})")

    def on_train_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        if not math.isfinite(logs["train_loss"]):
            self._fail(f"The training loss became {logs['train_loss']} in epoch {epoch}")

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        if not math.isfinite(logs["val_loss"]):
            self._fail(f"The validation loss became {logs['val_loss']} in epoch {epoch}")


__all__ = ["EarlyStopping", "NanGuard"]
