"""Built-in callbacks that end training: early stopping on the validation loss, and the NaN guard."""

from __future__ import annotations

import math
from typing import Any

from zoo.engine.callbacks import Callback, Run, StopTraining
from zoo.vocab import Status, StopReason


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a validation loss ``min_delta`` below the best one. Adds
    ``improved`` and ``best_epoch`` to the epoch's logs (the checkpoint and the display read them).

    With ``patience_lr`` below 1, epochs without improvement are counted only once the epoch's lr (``logs['lr']``)
    is at most that fraction of the highest lr seen so far: a decaying schedule is not cut off before its
    annealing phase by noise of the validation loss (the best weights are still tracked from the first epoch)."""

    def __init__(self, patience: int, min_delta: float = 0.0, patience_lr: float = 1.0) -> None:
        self.patience, self.min_delta, self.patience_lr = patience, min_delta, patience_lr
        self.best_loss, self.best_epoch, self.waited = math.inf, None, 0
        self.peak_lr = 0.0

    def counting(self, lr: float) -> bool:
        """Whether an epoch that ended with this lr counts towards the patience."""
        self.peak_lr = max(self.peak_lr, lr)
        return self.patience_lr >= 1 or lr <= self.patience_lr * self.peak_lr

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        improved = logs["val_loss"] < self.best_loss - self.min_delta
        counting = self.counting(float(logs.get("lr", 0.0)))
        if improved:
            self.best_loss, self.best_epoch, self.waited = logs["val_loss"], epoch, 0
        elif counting:
            self.waited += 1
        logs["improved"], logs["best_epoch"] = improved, self.best_epoch
        if not improved and counting and self.waited >= self.patience:
            raise StopTraining(StopReason.EARLY_STOP.value)

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "waited": self.waited,
                "peak_lr": self.peak_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = float(state["best_loss"]), state["best_epoch"]
        self.waited = int(state["waited"])
        self.peak_lr = float(state.get("peak_lr", 0.0))


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
