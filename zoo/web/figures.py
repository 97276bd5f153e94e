"""The figures of the pages and the report, from run views and their history: SVG strings (see charts.py)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from zoo.vocab import ACCURACY, LOSS, TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS
from zoo.web.charts import Series, bar_chart, colour, heatmap, line_chart

History = dict[str, list[tuple[int, Optional[float]]]]
CURVE_TITLES = {"train_loss": "Training loss", "val_loss": "Validation loss", "train_acc": "Training accuracy",
                "val_acc": "Validation accuracy"}


def run_label(run: Any) -> str:
    return f"#{run.id} {run.model}" + (f" ({run.name})" if run.name else "")


def run_curves(run: Any, history: History) -> list[str]:
    """Loss and accuracy per epoch of one run: train dashed, validation solid, best epoch starred."""
    charts = []
    for title, train, val, y_label in (("Loss", TRAIN_LOSS, VAL_LOSS, LOSS),
                                       ("Accuracy", TRAIN_ACC, VAL_ACC, ACCURACY)):
        series = [Series(label=label, points=list(history[key]), colour=colour(i), dashed=key.startswith("train"),
                         best=run.best_epoch, run_id=run.id)
                  for i, (key, label) in enumerate(((train, "train"), (val, "validation"))) if key in history]
        if series:
            charts.append(line_chart(series, title=f"{title} (★ best epoch)", y_label=y_label,
                                     chart_id=title.lower()))
    return charts


def overlay_curves(runs: Sequence[Any], histories: dict[int, History],
                   keys: Sequence[str] = (TRAIN_LOSS, VAL_LOSS, VAL_ACC)) -> list[str]:
    """One chart per history key with a line per run (same colour per run in every chart)."""
    charts = []
    for key in keys:
        series = [Series(label=run_label(run), points=list(histories.get(run.id, {}).get(key, [])), colour=colour(i),
                         best=run.best_epoch, run_id=run.id)
                  for i, run in enumerate(runs) if histories.get(run.id, {}).get(key)]
        if series:
            charts.append(line_chart(series, title=f"{CURVE_TITLES.get(key, key)} (★ best epoch)",
                                     y_label=key.split("_", 1)[-1], chart_id=key))
    return charts


def metric_bars(runs: Sequence[Any], metrics: Sequence[str]) -> list[str]:
    from zoo.render import short_metric

    return [bar_chart([(run_label(run), run.metrics.get(key), colour(i)) for i, run in enumerate(runs)],
                      title=short_metric(key), chart_id=key)
            for key in metrics]


def confusion(classes: Optional[Sequence[str]], matrix: Optional[list[list[int]]], title: str) -> str:
    return heatmap(list(classes or []), matrix, title=title) if matrix else ""
