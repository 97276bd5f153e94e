"""Built-in callbacks that write files: the best weights (``best.pt``, a zoo checkpoint) and ``last.pt`` (what
resuming needs), plus putting a run back where a ``last.pt`` left it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from zoo.engine.callbacks import Callback, Run

if TYPE_CHECKING:
    import torch

    from zoo.models import ModelInfo

LAST_VERSION = 1  # additive since: "callbacks" holds every callback's state_dict


class BestCheckpoint(Callback):
    """Keeps the weights of the best epoch (``logs['improved']``, set by EarlyStopping) in memory and, with a
    ``path``, in a zoo checkpoint there; ``restore`` puts them back in the model before testing."""

    def __init__(self, path: Optional[Path], info: "ModelInfo", classes: list[str], image_size: int) -> None:
        self.path, self.info, self.classes, self.image_size = path, info, classes, image_size
        self.best_state: Optional[dict] = None
        self.best_epoch: Optional[int] = None

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        if not logs.get("improved"):
            return
        self.best_epoch = epoch
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
        if self.save():
            logs["checkpoint"] = str(self.path)

    def save(self) -> bool:
        """Write the best weights as a zoo checkpoint (when there is a path and weights to write)."""
        if self.path is None or self.best_state is None:
            return False
        from zoo.checkpoint import save_checkpoint

        save_checkpoint(self.path, model=self.info.name, plugin=self.info.plugin, classes=self.classes,
                        image_size=self.image_size, state_dict=self.best_state, epoch=self.best_epoch,
                        **self.info.preprocess.params())  # the normalisation and eval resize it trained with
        return True

    def resume(self, state: dict) -> None:
        """The best weights from a last.pt (they ride in it; an older one without them: best.pt), then best.pt
        written again from them: it may be damaged, or hold an epoch whose history was never recorded."""
        best = state.get("best_model")
        if best is None and self.best_epoch is not None and self.best_epoch == int(state["epoch"]):
            best = state["model"]
        elif best is None and self.best_epoch is not None and self.path is not None:  # an older last.pt
            from zoo.checkpoint import load_checkpoint

            best = load_checkpoint(self.path)["state_dict"]
        self.best_state = best
        self.save()

    @property
    def checkpoint(self) -> Optional[str]:
        return str(self.path) if self.path is not None and self.best_state is not None else None

    def restore(self, model: "torch.nn.Module") -> None:
        model.load_state_dict(self.best_state)  # early stopping restores the best weights, also at max_epochs

    def state_dict(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_epoch = state.get("best_epoch")  # the weights: ``resume``, from last.pt itself


class LastCheckpoint(Callback):
    """Writes ``last.pt`` after every epoch (atomically): weights, optimizer, schedule, scaler, RNG, history and
    every callback's state; removed once the run has ended (nothing to resume)."""

    def __init__(self, path: Optional[Path], best: BestCheckpoint) -> None:
        self.path, self.best = path, best

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        if self.path is None:
            return
        import torch

        from zoo.checkpoint import LAST_FORMAT, atomic_save

        states = run.callbacks.state_dict()
        stopping = states.get("EarlyStopping", {})
        atomic_save({"format": LAST_FORMAT, "version": LAST_VERSION, "epoch": epoch,
                     "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                     "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                     "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                     "generator": run.generator.get_state(), "torch_rng": torch.get_rng_state(),
                     # read by the session and by zoo versions before callbacks had state
                     "best_loss": stopping.get("best_loss"), "best_epoch": stopping.get("best_epoch"),
                     "waited": stopping.get("waited"),
                     # the best weights, unless they are this epoch's (above): resuming needs last.pt alone
                     "best_model": self.best.best_state if self.best.best_epoch != epoch else None,
                     "history": [h.as_row() for h in run.history], "callbacks": states}, self.path)

    def on_train_end(self, run: Run, result: Any) -> None:
        self.remove()

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def restore_run(run: Run, state: dict) -> int:
    """Put ``run`` back where ``state`` (a last.pt's content) left it; returns the epoch to go on from."""
    import torch

    from zoo.engine.loop import EpochStats

    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None and state.get("scheduler") is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler") is not None:
        run.scaler.load_state_dict(state["scaler"])
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    run.history = [EpochStats(**row) for row in state["history"]]
    legacy = {"best_loss": state["best_loss"], "best_epoch": state["best_epoch"], "waited": state["waited"]}
    states = state.get("callbacks") or {"EarlyStopping": legacy, "BestCheckpoint": {"best_epoch": state["best_epoch"]}}
    run.callbacks.load_state_dict(states)
    for callback in run.callbacks.callbacks:
        if isinstance(callback, BestCheckpoint):
            callback.resume(state)
    run.epoch = int(state["epoch"])
    return run.epoch + 1


__all__ = ["BestCheckpoint", "LastCheckpoint", "restore_run"]
