"""Built-in callback ``WeightEMA`` (``--ema DECAY``): an exponential moving average of the weights, updated after
every optimizer step, and ``FlipAverage`` (``--tta``): test on the mean softmax of each image and its mirror image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.engine.callbacks import Callback, Run

if TYPE_CHECKING:
    import torch


class WeightEMA(Callback):
    """Keeps ``torch.optim.swa_utils.AveragedModel`` with an EMA of the model's weights and buffers (decay per
    optimizer step). Validation sees the averaged weights: they are put into the model after the training half of
    each epoch and the trained weights come back once the epoch's callbacks before this one (early stopping, the
    best checkpoint) have run, so ``best.pt`` and the test hold averaged weights and training goes on with its own.
    Place it after the best checkpoint and before ``last.pt``; its state (the average) rides in ``last.pt``."""

    def __init__(self, model: "torch.nn.Module", decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.model = model
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.trained: list["torch.Tensor"] = []

    def _tensors(self, model: "torch.nn.Module") -> list["torch.Tensor"]:
        return [*model.parameters(), *model.buffers()]

    def on_step_end(self, run: Run, epoch: int, batch: int) -> None:
        self.average.update_parameters(self.model)

    def on_train_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            live = self._tensors(self.model)
            self.trained = [t.detach().clone() for t in live]
            for target, averaged in zip(live, self._tensors(self.average.module)):
                target.copy_(averaged)

    def on_epoch_end(self, run: Run, epoch: int, logs: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for target, trained in zip(self._tensors(self.model), self.trained):
                target.copy_(trained)
        self.trained = []

    def state_dict(self) -> dict[str, Any]:
        return {"average": {k: v.detach().to("cpu", copy=True) for k, v in self.average.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state["average"])


def flip_average(model: "torch.nn.Module", tta: bool = True) -> "torch.nn.Module":
    """``model`` seen through test-time flip (when ``tta``; else ``model`` itself): its output is the log of the
    mean softmax of the image and of the image mirrored left-right, so a softmax of it is that mean and its
    cross-entropy the mean's."""
    if not tta:
        return model
    import torch

    class FlipAverage(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = (self.inner(x).float().softmax(1) + self.inner(x.flip(-1)).float().softmax(1)) / 2
            return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()

    return FlipAverage(model)


__all__ = ["WeightEMA", "flip_average"]
