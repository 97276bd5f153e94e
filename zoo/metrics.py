"""Precision, recall and F1 from a confusion matrix: the one copy used by the engine, the store and rendering.

``confusion[true][pred]`` counts, in the order of the classes. Undefined ratios (a class never predicted, or
absent from the split) count as 0, as scikit-learn's ``zero_division=0`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from zoo.vocab import ACCURACY, F1, LOSS, PER_CLASS, PRECISION, RECALL, TEST, metric_key

Confusion = Sequence[Sequence[int]]


@dataclass(frozen=True)
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int  # images of this class in the split


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def class_scores(confusion: Confusion) -> list[ClassScore]:
    """One ClassScore per row of the matrix."""
    n = len(confusion)
    scores = []
    for i in range(n):
        tp = confusion[i][i] if i < len(confusion[i]) else 0
        predicted = sum(row[i] for row in confusion if i < len(row))
        support = sum(confusion[i])
        p, r = _ratio(tp, predicted), _ratio(tp, support)
        scores.append(ClassScore(p, r, 2 * p * r / (p + r) if p + r else 0.0, support))
    return scores


def accuracy(confusion: Confusion) -> float:
    total = sum(sum(row) for row in confusion)
    return _ratio(sum(confusion[i][i] for i in range(len(confusion)) if i < len(confusion[i])), total)


def summarize(confusion: Confusion, classes: Sequence[str], loss: Optional[float] = None,
              prefix: str = TEST) -> dict[str, float]:
    """Accuracy, loss, per-class and macro precision/recall/F1 as recorded metric keys (test_f1, test_f1/cat...)."""
    out: dict[str, float] = {metric_key(ACCURACY, prefix=prefix): accuracy(confusion)}
    if loss is not None:
        out[metric_key(LOSS, prefix=prefix)] = float(loss)
    scores = class_scores(confusion)
    for name, score in zip(classes, scores):
        for metric in PER_CLASS:
            out[metric_key(metric, name, prefix)] = getattr(score, metric)
    for metric in PER_CLASS:
        out[metric_key(metric, prefix=prefix)] = (sum(getattr(s, metric) for s in scores) / len(scores)
                                                  if scores else 0.0)
    return out


__all__ = ["ClassScore", "class_scores", "accuracy", "summarize", "PRECISION", "RECALL", "F1"]
