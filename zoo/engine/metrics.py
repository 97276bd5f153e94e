"""Test metrics: the confusion-matrix ones (``zoo.metrics``, the one copy) plus every registered metric
(``register_metrics``: ``fn(y_true, y_pred, probs)``), recorded as ``test_<name>``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from zoo.metrics import summarize
from zoo.vocab import TEST, metric_key

if TYPE_CHECKING:
    import torch

    from zoo.distributed import World


def metrics_from_confusion(confusion: list[list[int]], classes: list[str], loss: Optional[float] = None,
                           prefix: str = TEST) -> dict[str, float]:
    """Accuracy, per-class and macro precision/recall/F1 from confusion[true][pred] (zoo.metrics.summarize)."""
    return summarize(confusion, classes, loss, prefix)


def gather_outputs(outputs: list, n: int, num_classes: int, world: "World",
                   device: Optional["torch.device"] = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(labels, softmax) of the whole split from each batch's; under torchrun every rank's share is put at its
    positions (``World.eval_share``) and the ranks' matrices summed, so every rank holds the whole split."""
    import torch

    labels = torch.cat([y for y, _ in outputs]) if outputs else torch.zeros(0, dtype=torch.long)
    probs = torch.cat([p for _, p in outputs]) if outputs else torch.zeros(0, num_classes)
    if not world.launched:
        return labels, probs
    full = torch.zeros(n, num_classes + 1, dtype=torch.float64)
    full[world.eval_share(n)] = torch.cat([probs.double(), labels.double().view(-1, 1)], 1)
    full = world.sum(full.to(device or "cpu")).cpu()  # on the device the ranks' collectives use
    return full[:, -1].round().long(), full[:, :-1].float()


def test_metrics(confusion: list[list[int]], classes: list[str], loss: float, y_true: "torch.Tensor",
                 probs: "torch.Tensor", table: Any) -> dict[str, float]:
    """Every metric a run records: the confusion-based ones, then each registered metric that applies (enough
    classes) and comes out finite."""
    out = metrics_from_confusion(confusion, classes, loss)
    y_pred = probs.argmax(1) if len(probs) else y_true
    for part in table.values():
        if len(classes) <= part.min_classes or not len(y_true):
            continue
        value = float(part.builder(y_true, y_pred, probs))
        if math.isfinite(value):
            out[metric_key(part.name)] = value
    return out


__all__ = ["metrics_from_confusion", "gather_outputs", "test_metrics"]
