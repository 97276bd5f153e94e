"""Rendering of runs: pure functions that turn registry views into rich Tables, plain records, CSV, Markdown,
JSON, sparklines and the loss-curve figure. Nothing here touches the database or the command line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional, Sequence

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from zoo.errors import printable
from zoo.vocab import HISTORY_KEYS, LOSS_KEYS, METRIC_ORDER, NOTE_TAG, PER_CLASS

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
STATUS_STYLES = {
    "completed": "green", "running": "cyan", "failed": "bold red", "interrupted": "yellow", "stale": "magenta",
    "queued": "blue", "pruned": "dim",
}
HISTORY_ORDER = HISTORY_KEYS  # zoo.vocab's, the one owner
MACRO_ORDER = METRIC_ORDER  # zoo.vocab's, the one owner
History = dict[str, list[tuple[int, Optional[float]]]]


# ----------------------------------------------------------------------------- small formatters
def sparkline(values: Sequence[Optional[float]], width: int = 20) -> str:
    """A one-line chart of a series; None/NaN as a gap; longer series are averaged down to ``width`` cells."""
    values = [v if v is not None and math.isfinite(v) else None for v in values]
    if not values:
        return ""
    if len(values) > width:
        buckets = []
        for i in range(width):
            chunk = [v for v in values[i * len(values) // width:(i + 1) * len(values) // width] if v is not None]
            buckets.append(sum(chunk) / len(chunk) if chunk else None)
        values = buckets
    finite = [v for v in values if v is not None]
    if not finite:
        return " " * len(values)
    low, high = min(finite), max(finite)
    span = high - low
    top = len(SPARK_BLOCKS) - 1
    return "".join(
        " " if v is None else SPARK_BLOCKS[round((v - low) / span * top) if span else 0] for v in values
    )


def fmt_time(value: Optional[datetime]) -> str:
    """A stored naive-UTC time as local time, to the minute."""
    if value is None:
        return ""
    return value.replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


def iso(value: Optional[datetime]) -> Optional[str]:
    return None if value is None else value.replace(tzinfo=timezone.utc).isoformat()


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def fmt_num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return fmt_value(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


COUNT_KEYS = ("images",)  # metrics that count things: shown as integers


def fmt_metric(key: str, value: Any) -> str:
    """A metric value: counts (images) as integers, the rest as fmt_num."""
    if key in COUNT_KEYS and isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return fmt_num(value)


def fmt_value(value: Any) -> str:
    """A param value as a user would type it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def status_text(status: str) -> Text:
    return Text(printable(status), style=STATUS_STYLES.get(status, ""))


def epochs_cell(run: Any) -> str:
    if not run.epochs_run:
        return ""
    return f"{run.epochs_run} ({run.best_epoch})" if run.best_epoch else str(run.epochs_run)


def short_metric(key: str) -> str:
    return key[5:] if key.startswith("test_") else key


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def _clean(value: Any) -> Any:
    """NaN/inf (not valid JSON) as null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def to_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def to_markdown(headers: Sequence[str], rows: Iterable[Sequence[Any]], align_right: Sequence[bool] = ()) -> str:
    def cell(value: Any) -> str:
        return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    rule = ["---:" if i < len(align_right) and align_right[i] else "---" for i in range(len(headers))]
    lines.append("| " + " | ".join(rule) + " |")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Col:
    """A table column with its cells.

    ``drop`` > 0 lets a narrow terminal leave it out (highest first; see OPTIONAL), 0 never. ``short`` is the
    header (lines split by newline) and ``short_cells`` the cells used by the compact layouts; ``wrap`` lets the
    cells wrap at spaces; ``fill`` computes the cells only when the column is shown (``cells`` then holds
    placeholders as wide as the widest cell can be); ``label`` names it in the "hidden" caption.
    """

    header: str
    cells: list
    justify: str = "left"
    style: Optional[str] = None
    header_style: Optional[str] = None
    drop: int = 0
    short: Optional[str] = None
    short_cells: Optional[list] = None
    wrap: bool = False
    fill: Optional[Callable[[], list]] = None
    label: Optional[str] = None

    def heading(self, compact: bool) -> str:
        return self.short if compact and self.short else self.header

    def values(self, compact: bool) -> list:
        return self.short_cells if compact and self.short_cells is not None else self.cells

    def width(self, compact: bool = False) -> int:
        """The narrowest this column can be without truncation: the widest header line and cell (word, if wrap)."""
        widths = [cell_len(line) for line in self.heading(compact).split("\n")]
        for cell in self.values(compact):
            text = cell.plain if isinstance(cell, Text) else printable(cell)  # as the console will print it
            pieces = text.split() if self.wrap else [text]
            widths += [cell_len(piece) for piece in pieces]
        return max(widths)


# Columns with drop >= OPTIONAL go before any layout change; lower ones (wanted, but not vital) only after the
# tightest layout still does not fit.
OPTIONAL = 100
# (name, compact headers/cells, cost of the borders and padding for n columns)
LAYOUTS = (
    ("boxed", False, lambda n: 3 * n + 1),
    ("compact", True, lambda n: 2 * (n - 1)),  # no box, two spaces between columns, headers on two lines
    ("tight", True, lambda n: n - 1),  # one space between columns
)


def fit_columns(cols: list[Col], width: Optional[int]) -> tuple[list[Col], str, list[Col]]:
    """Which columns to show in which layout so the table fits ``width`` without truncating a cell.

    For each layout, widest first, the optional columns (drop >= OPTIONAL) go one by one until it fits; only when
    even the tightest layout does not fit without them do the other droppable ones go. Returns the columns shown,
    the layout and the columns hidden.
    """
    def fits(shown: list[Col], layout) -> bool:
        _, compact, cost = layout
        return sum(c.width(compact) for c in shown) + cost(len(shown)) <= width

    if not width:
        return list(cols), LAYOUTS[0][0], []
    for layout in LAYOUTS:
        shown = list(cols)
        while not fits(shown, layout) and any(c.drop >= OPTIONAL for c in shown):
            shown.remove(max(shown, key=lambda c: c.drop))
        if fits(shown, layout):
            return shown, layout[0], [c for c in cols if c not in shown]
    layout = LAYOUTS[-1]
    while not fits(shown, layout) and any(c.drop for c in shown):
        shown.remove(max(shown, key=lambda c: c.drop))
    return shown, layout[0], [c for c in cols if c not in shown]


def fitted_table(cols: list[Col], width: Optional[int], **options: Any) -> Table:
    """A Table of these columns in the roomiest layout that fits ``width`` (see fit_columns).

    The columns shown never truncate: a narrow terminal shows fewer columns instead of squeezed ones, and
    ``hidden_caption`` says which went.
    """
    from rich import box

    shown, layout, hidden = fit_columns(cols, width)
    compact = layout != "boxed"
    if compact:
        options = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False,
                   "padding": (0, 1, 0, 0) if layout == "compact" else 0, **options}
    table = Table(header_style="bold", caption_justify="left", **options)
    for c in shown:
        table.add_column(c.heading(compact), justify=c.justify, style=c.style, header_style=c.header_style,
                         no_wrap=not c.wrap, overflow="fold" if c.wrap else "ellipsis")
    cells = [c.fill() if c.fill else c.values(compact) for c in shown]
    for row in zip(*cells):
        table.add_row(*row)
    table.hidden = hidden  # type: ignore[attr-defined]
    return table


def hidden_caption(hidden: Sequence[Col], formats: str) -> str:
    """'2 columns hidden (duration, param:lr): widen the terminal or use --format csv/json.' or ''."""
    if not hidden:
        return ""
    names = ", ".join(c.label or c.header for c in hidden)
    count = f"{len(hidden)} column{'s' if len(hidden) != 1 else ''}"
    return f"{count} hidden ({names}): widen the terminal or use --format {formats}."


def fmt_started(values: Sequence[Optional[datetime]]) -> list[str]:
    """Start times for a narrow table: 'MM-DD HH:MM' when all are in this year, else as fmt_time."""
    local = [v.replace(tzinfo=timezone.utc).astimezone() if v else None for v in values]
    year = datetime.now().astimezone().year
    if all(v is None or v.year == year for v in local):
        return [v.strftime("%m-%d %H:%M") if v else "" for v in local]
    return [fmt_time(v) for v in values]


# ----------------------------------------------------------------------------- list-runs
LIST_HEADERS = ("id", "name", "model", "status", "started", "duration_s", "epochs_run", "best_epoch",
                "best_val_loss", "test_accuracy")


def runs_table(runs: Sequence[Any], total: int, width: Optional[int] = None) -> Table:
    """The list-runs table; a narrow terminal gets a compact layout first, then the least useful columns go
    (id, model, status and test acc always stay), and the caption says which."""
    cols = [
        Col("id", [str(r.id) for r in runs], justify="right"),
        Col("name", [r.name or "" for r in runs], drop=5, wrap=True),
        Col("model", [r.model for r in runs], wrap=True),
        Col("status", [status_text(r.display_status) for r in runs]),
        Col("started", [fmt_time(r.started) for r in runs], drop=3, short_cells=fmt_started([r.started for r in runs])),
        Col("duration", [fmt_duration(r.duration) for r in runs], justify="right", drop=4),
        Col("epochs (best)", [epochs_cell(r) for r in runs], justify="right", drop=1, short="epochs\n(best)"),
        Col("best val loss", [fmt_num(r.best_val_loss) for r in runs], justify="right", drop=2,
            short="best val\nloss"),
        Col("test acc", [fmt_num(r.metrics.get("test_accuracy")) for r in runs], justify="right",
            short="test\nacc"),
    ]
    if not any(r.name for r in runs):
        cols.pop(1)
    table = fitted_table(cols, width)  # how many rows were left out: list-runs says so on stderr, once
    table.caption = hidden_caption(table.hidden, "csv/json") or None
    return table


def run_record(run: Any) -> dict[str, Any]:
    """The JSON object of one run in lists: id, model, status, metrics and the columns of the table."""
    return _clean({
        "id": run.id, "uuid": run.uuid, "name": run.name, "model": run.model, "plugin": run.plugin,
        "status": run.display_status, "stale_reason": run.stale, "created": iso(run.created),
        "started": iso(run.started), "finished": iso(run.finished), "duration_s": run.duration,
        "epochs_run": run.epochs_run, "best_epoch": run.best_epoch, "best_val_loss": run.best_val_loss,
        "stop_reason": run.stop_reason, "dataset_fingerprint": run.dataset_fingerprint,
        "split_fingerprint": run.split_fingerprint, "metrics": dict(run.metrics), "tags": dict(run.tags),
    })


def runs_csv(runs: Sequence[Any]) -> str:
    rows = []
    for run in runs:
        rec = run_record(run)
        rows.append([rec[h] if h in rec else rec["metrics"].get(h) for h in LIST_HEADERS])
    return to_csv(LIST_HEADERS, rows)


# ----------------------------------------------------------------------------- show
def _kv_table(title: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                  padding=(0, 2, 0, 0))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def ordered_keys(keys: Iterable[str], preferred: Sequence[str]) -> list[str]:
    keys = set(keys)
    return [k for k in preferred if k in keys] + sorted(keys - set(preferred))


def per_class(classes: Sequence[str], metrics: dict[str, Any], confusion: Optional[list[list[int]]]) -> list[dict]:
    """Precision, recall, F1 and support per class: the recorded ones, else computed from the confusion matrix."""
    from zoo.metrics import class_scores
    from zoo.vocab import PER_CLASS, metric_key

    scores = class_scores(confusion) if confusion else []
    rows = []
    for i, name in enumerate(classes):
        score = scores[i] if i < len(scores) else None
        row: dict[str, Any] = {"class": name}
        for metric in PER_CLASS:
            recorded = metrics.get(metric_key(metric, name))
            row[metric] = recorded if recorded is not None else (getattr(score, metric) if score else None)
        row["support"] = score.support if score else None
        rows.append(row)
    return rows


def confusion_table(classes: Sequence[str], confusion: list[list[int]], title: str = "Confusion matrix") -> Table:
    caption = "rows: true class, columns: predicted"
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold",
                  caption=caption, caption_justify="left", min_width=max(len(title), len(caption)))
    table.add_column("true \\ pred", style="bold", no_wrap=True)
    for name in classes:
        table.add_column(name, justify="right")
    for i, line in enumerate(confusion):
        name = classes[i] if i < len(classes) else str(i)
        table.add_row(name, *[Text(str(n), style="green" if j == i else ("red" if n else "dim"))
                              for j, n in enumerate(line)])
    return table


def run_detail(run: Any, history: History) -> Group:
    """Everything `zoo show` prints for one run."""
    parts: list[Any] = []
    head = _kv_table(f"Run {run.id}" + (f" · {run.name}" if run.name else "") + f" · {run.model}")
    status = status_text(run.display_status)
    if run.stale:
        status.append(f" ({run.stale}; recorded as running)", style="dim")
    for label, value in (
        ("status", status), ("uuid", run.uuid), ("model", f"{run.model} (plugin {run.plugin})"),
        ("started", fmt_time(run.started)), ("finished", fmt_time(run.finished)),
        ("duration", fmt_duration(run.duration)), ("epochs", epochs_cell(run)),
        ("best val loss", fmt_num(run.best_val_loss) if run.best_val_loss is not None else ""),
        ("stop reason", run.stop_reason or ""),
        ("host / pid", f"{run.host or ''} / {run.pid or ''}" if run.host or run.pid else ""),  # none while queued
        ("device", run.device or ""),
        ("versions", ", ".join(f"{n} {getattr(run, n + '_version')}" for n in ("zoo", "torch", "torchvision", "python")
                                if getattr(run, n + "_version"))),
        ("dataset", run.dataset_path or ""), ("fingerprint", run.dataset_fingerprint or ""),
        ("split", ((run.split_fingerprint or "") + _sizes(run)).strip()),
        ("classes", ", ".join(run.classes or [])), ("checkpoint", run.checkpoint or ""),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items()))),
        ("note", getattr(run, "system_tags", {}).get(NOTE_TAG, "")),
        ("group", getattr(run, "group", None) or ""),
        ("lineage", f"from run {run.parent}" if getattr(run, "parent", None) else ""),
    ):
        if value:
            head.add_row(label, value)
    parts.append(head)
    if run.error:
        parts.append(Text(f"Error: {printable(run.error)}", style="bold red"))

    if run.params:
        table = _kv_table("Params")
        for key, value in run.params.items():
            table.add_row(key, fmt_value(value))
        parts += [Text(""), table]

    if history:
        parts += [Text(""), history_table(history, run.best_epoch)]
        for key in LOSS_KEYS:
            series = [v for _, v in history.get(key, [])]
            finite = [v for v in series if v is not None]
            if finite:
                line = Text(f"{printable(key):<11}", style="dim")
                line.append(sparkline(series, width=40), style="cyan")
                line.append(f"  {fmt_num(series[0])} → {fmt_num(series[-1])} (min {fmt_num(min(finite))})")
                parts.append(line)

    overall = {k: v for k, v in run.metrics.items() if "/" not in k}
    if overall:
        table = _kv_table("Test metrics")
        for key in ordered_keys(overall, MACRO_ORDER):
            table.add_row(key, fmt_metric(key, overall[key]))
        parts += [Text(""), table]
    if run.classes and (run.confusion or any("/" in k for k in run.metrics)):
        parts += [Text(""), per_class_table(per_class(run.classes, run.metrics, run.confusion))]
    if run.classes and run.confusion:
        parts += [Text(""), confusion_table(run.classes, run.confusion, "Confusion matrix (test)")]
    if run.evaluations:
        parts += [Text(""), evaluations_table(run.evaluations)]
        for e in run.evaluations:
            if e.confusion and e.classes:
                parts += [Text(""), confusion_table(e.classes, e.confusion,
                                                    f"Confusion matrix (evaluation {e.id}: {e.dataset})")]
    return Group(*parts)


def _sizes(run: Any) -> str:
    sizes = [f"{n} {s}" for n, s in (("train", run.train_size), ("val", run.val_size), ("test", run.test_size))
             if s is not None]
    return (" (" + ", ".join(sizes) + ")") if sizes else ""


# How the history table heads and rounds the keys the engine logs (others: the key, 4 decimals).
HISTORY_HEADS = {"train_loss": "train\nloss", "train_acc": "train\nacc", "val_loss": "val\nloss",
                 "val_acc": "val\nacc", "lr": "lr", "seconds": "time\n(s)", "images_per_sec": "img/s"}


def history_cell(key: str, value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return fmt_num(value)
    if key == "images_per_sec":
        return f"{value:,.0f}"
    if key == "seconds":
        return f"{value:.1f}"
    if key == "lr":
        return f"{value:.3g}"
    return fmt_num(value)


def history_table(history: History, best_epoch: Optional[int]) -> Table:
    keys = ordered_keys(history, HISTORY_ORDER)
    table = Table(title="History (* best epoch)", title_justify="left", title_style="bold", header_style="bold")
    table.add_column("epoch", justify="right", no_wrap=True)
    for key in keys:
        table.add_column(HISTORY_HEADS.get(key, key), justify="right", no_wrap=True)
    by_epoch: dict[int, dict[str, Optional[float]]] = {}
    for key in keys:
        for epoch, value in history[key]:
            by_epoch.setdefault(epoch, {})[key] = value
    for epoch in sorted(by_epoch):
        best = epoch == best_epoch
        table.add_row(f"{epoch}{'*' if best else ''}", *[history_cell(k, by_epoch[epoch].get(k)) for k in keys],
                      style="bold green" if best else None)
    return table


def per_class_table(rows: list[dict], title: str = "Per class (test)") -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for name in ("class", *PER_CLASS, "support"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for row in rows:
        table.add_row(row["class"], fmt_num(row["precision"]), fmt_num(row["recall"]), fmt_num(row["f1"]),
                      "" if row["support"] is None else str(row["support"]))
    return table


def evaluations_table(evaluations: Sequence[Any]) -> Table:
    keys = ordered_keys({k for e in evaluations for k in e.metrics if "/" not in k}, MACRO_ORDER)
    table = Table(title="Evaluations", title_justify="left", title_style="bold", header_style="bold")
    for name in ("id", "when", "dataset", "fingerprint", *[short_metric(k) for k in keys]):
        table.add_column(name, justify="right" if name not in ("when", "dataset", "fingerprint") else "left")
    for e in evaluations:
        table.add_row(str(e.id), fmt_time(e.created), e.dataset, (e.dataset_fingerprint or "")[:12],
                      *[fmt_metric(k, e.metrics.get(k)) for k in keys])
    return table


def run_json(run: Any, history: History) -> dict[str, Any]:
    data = run.to_dict()
    data["history"] = {k: [[e, v] for e, v in points] for k, points in history.items()}
    if run.classes:
        data["per_class"] = per_class(run.classes, run.metrics, run.confusion)
    for key in ("created", "started", "finished", "heartbeat"):
        data[key] = iso(data[key])
    for evaluation in data["evaluations"]:
        evaluation["created"] = iso(evaluation["created"])
    return _clean(data)


# ----------------------------------------------------------------------------- compare
def compare_columns(cmp: Any) -> list[str]:
    return ["rank", "run", "name", "model", cmp.metric, *cmp.other_metrics, "epochs_run", "best_epoch",
            "duration_s", *[f"param:{k}" for k in cmp.differing_params]]


def compare_records(cmp: Any) -> list[dict[str, Any]]:
    records = []
    for rank, run in enumerate(cmp.runs, 1):
        records.append(_clean({
            "rank": rank, "id": run.id, "name": run.name, "model": run.model, "status": run.display_status,
            "metric": cmp.metric, "value": run.metrics.get(cmp.metric),
            "metrics": {k: run.metrics.get(k) for k in [cmp.metric, *cmp.other_metrics]},
            "epochs_run": run.epochs_run, "best_epoch": run.best_epoch, "duration_s": run.duration,
            "params": {k: values[run.id] for k, values in cmp.differing_params.items()},
            "dataset_fingerprint": run.dataset_fingerprint, "split_fingerprint": run.split_fingerprint,
        }))
    return records


def compare_rows(cmp: Any, *, numbers: bool) -> list[list[Any]]:
    """Rows under compare_columns(): raw numbers (csv) or formatted text (markdown)."""
    rows = []
    for rank, run in enumerate(cmp.runs, 1):
        values = [run.metrics.get(k) for k in [cmp.metric, *cmp.other_metrics]]
        params = [cmp.differing_params[k][run.id] for k in cmp.differing_params]
        if numbers:
            rows.append([rank, run.id, run.name, run.model, *values, run.epochs_run, run.best_epoch,
                         None if run.duration is None else round(run.duration, 1),
                         *[json.dumps(v) if isinstance(v, (list, dict)) else v for v in params]])
        else:
            rows.append([rank, run.id, run.name or "", run.model, *[fmt_num(v) for v in values],
                         run.epochs_run or "", run.best_epoch or "", fmt_duration(run.duration),
                         *[fmt_value(v) for v in params]])
    return rows


def compare_markdown(cmp: Any) -> str:
    headers = ["rank", "run", "name", "model", *[short_metric(k) for k in [cmp.metric, *cmp.other_metrics]],
               "epochs run", "best epoch", "duration", *[f"param:{k}" for k in cmp.differing_params]]
    numeric = [True, True, False, False] + [True] * (len(cmp.other_metrics) + 4)
    return to_markdown(headers, compare_rows(cmp, numbers=False), numeric)


def compare_warnings(cmp: Any) -> list[str]:
    lines = []
    if cmp.dataset_fingerprints:
        lines.append(
            f"These runs were trained on {len(cmp.dataset_fingerprints)} different datasets (fingerprints "
            f"{', '.join(f[:12] for f in cmp.dataset_fingerprints)}): the comparison is not fair."
        )
    if cmp.split_fingerprints:
        lines.append(
            f"These runs used {len(cmp.split_fingerprints)} different train/val/test splits (fingerprints "
            f"{', '.join(f[:12] for f in cmp.split_fingerprints)}): their test sets differ, the comparison is not fair "
            f"(runs of one --split-seed share their split; --seed does not change it)."
        )
    for run in cmp.missing:
        lines.append(f"Run {run.id} ({run.model}, {run.display_status}) has no {cmp.metric}: left out.")
    return lines


def compare_table(cmp: Any, width: Optional[int] = None, losses: Callable[[], dict] = dict,
                  say_hidden: bool = True) -> Table:
    """The compare table. A narrow terminal loses the loss sparklines, then params beyond the first three, then
    switches to a compact layout; only then do the other metrics (last first), the first params, duration and
    epochs go (rank, run, model and the metric always stay). The params that differ come right after the metric
    ranked on, before the other metrics. The caption names what is hidden.

    ``losses`` reads the train/val loss history of the ranked runs; it is called only when the sparkline
    column is shown (default: no history, empty sparklines).
    """
    arrow = "lower is better" if cmp.lower_is_better else "higher is better"
    runs = cmp.runs

    def sparks() -> list[str]:
        history = losses()
        cells = []
        for run in runs:
            points = history.get(run.id, {})
            train = sparkline([v for _, v in points.get("train_loss", [])], width=12)
            val = sparkline([v for _, v in points.get("val_loss", [])], width=12)
            cells.append(f"{train:<12} | {val}")
        return cells

    params = list(cmp.differing_params)
    metric_head = f"{short_metric(cmp.metric)} ({'↓' if cmp.lower_is_better else '↑'})"
    others = list(cmp.other_metrics)
    cols = [
        Col("#", [str(i) for i in range(1, len(runs) + 1)], justify="right"),
        Col("run", [str(r.id) + (f" {r.name}" if r.name else "") for r in runs], justify="right", wrap=True),
        Col("model", [r.model for r in runs], wrap=True),
        Col(metric_head, [fmt_num(r.metrics.get(cmp.metric)) for r in runs], justify="right", style="bold",
            short=metric_head.replace(" (", "\n(")),
        # what tells the runs apart comes next: the first params stay longer than the other metrics
        *[Col(f"param:{k}", [fmt_value(cmp.differing_params[k][r.id]) for r in runs], justify="right", style="cyan",
              header_style="bold cyan", short=f"param:\n{k}",
              drop=(OPTIONAL + len(params) - i) if i >= FIRST_PARAMS else (3 + FIRST_PARAMS - i))
          for i, k in enumerate(params)],
        *[Col(short_metric(k), [fmt_num(r.metrics.get(k)) for r in runs], justify="right", drop=4 + FIRST_PARAMS + i)
          for i, k in enumerate(others)],
        Col("epochs (best)", [epochs_cell(r) for r in runs], justify="right", drop=1, short="epochs\n(best)"),
        Col("duration", [fmt_duration(r.duration) for r in runs], justify="right", drop=2),
        Col("loss: train | val", ["x" * 27 for _ in runs], drop=OPTIONAL + 1000, fill=sparks, label="loss sparklines",
            short="loss:\ntrain | val"),
    ]
    table = fitted_table(cols, width)
    caption = f"Ranked by {cmp.metric}, {arrow}."
    if cmp.differing_params:
        caption += f" Params that differ: {', '.join(cmp.differing_params)}."
    if cmp.total > len(cmp.runs):
        caption += f" {len(cmp.runs)} of {cmp.total} runs shown (--top N or --all for more)."
    hidden = hidden_caption(table.hidden, "markdown/csv") if say_hidden else ""
    table.caption = caption + (f" {hidden}" if hidden else "")
    return table


FIRST_PARAMS = 3  # differing params kept as long as the required columns; the ones after are optional


# ----------------------------------------------------------------------------- plot
DWARF_RATIO = 30.0  # a curve whose peak is this many times the median of all points flattens the others


def dwarfing_run(runs: Sequence[Any], losses: dict[int, History], keys: tuple[str, str]) -> Optional[tuple[Any, float]]:
    """(run, its peak) when one run's curve reaches over DWARF_RATIO times the median of every point plotted, so
    that on a linear axis every other curve lies flat along the bottom; None otherwise (or with values <= 0,
    which a log axis cannot show)."""
    values = [(run, v) for run in runs for key in keys for _, v in losses.get(run.id, {}).get(key, []) if v is not None]
    if len(values) < 3 or any(v <= 0 for _, v in values):
        return None
    ordered = sorted(v for _, v in values)
    median = ordered[len(ordered) // 2]
    run, peak = max(values, key=lambda item: item[1])
    return (run, peak) if peak > DWARF_RATIO * median else None


def plot_losses(runs: Sequence[Any], losses: dict[int, History], output: Any,
                keys: tuple[str, str] = LOSS_KEYS, log_y: bool = False) -> None:
    """Train and validation loss (or the two history ``keys`` given, e.g. train_acc and val_acc) per run in two
    side-by-side panels, best epoch starred, on a log y axis with ``log_y``; writes ``output``.

    Run names and model names are user text: shown literally ('$' starts no mathtext)."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        _plot_losses(runs, losses, output, keys, log_y)


def _plot_losses(runs: Sequence[Any], losses: dict[int, History], output: Any, keys: tuple[str, str],
                 log_y: bool = False) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, constrained_layout=True)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for index, run in enumerate(runs):
        colour = colours(index % colours.N)
        label = printable(f"#{run.id} {run.model}" + (f" ({run.name})" if run.name else ""))
        for ax, key in zip(axes, keys):
            points = [(e, v) for e, v in losses.get(run.id, {}).get(key, []) if v is not None]
            if not points:
                continue
            ax.plot([e for e, _ in points], [v for _, v in points], color=colour, linewidth=1.6,
                    label=label if key == keys[1] else None)
            best = dict(points).get(run.best_epoch) if run.best_epoch else None
            if best is not None:
                ax.plot([run.best_epoch], [best], marker="*", markersize=12, color=colour,
                        markeredgecolor="black", markeredgewidth=0.6, linestyle="none")
    quantity = "accuracy" if keys[0].endswith("_acc") else "loss"
    for ax, title in zip(axes, (f"Training {quantity}", f"Validation {quantity}")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel(quantity + (" (log scale)" if log_y else ""))
    if log_y:
        axes[0].set_yscale("log")  # the panels share y
    if runs:
        axes[1].legend(title="run (★ best epoch)", fontsize="small", title_fontsize="small", loc="best")
    try:
        fig.savefig(output, dpi=150)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- diff


def diff_sections(runs: Sequence[Any]) -> list[tuple[str, list[tuple[str, list[Any]]]]]:
    """What `zoo diff` compares, as (section, [(key, one value per run)]): the run, its params, its dataset and
    split, and its overall test metrics. Values are raw (None where a run lacks the key)."""
    def row(key: str, get: Callable[[Any], Any]) -> tuple[str, list[Any]]:
        return key, [get(r) for r in runs]

    run_rows = [
        row("name", lambda r: r.name), row("model", lambda r: r.model), row("plugin", lambda r: r.plugin),
        row("status", lambda r: r.display_status), row("started", lambda r: fmt_time(r.started) or None),
        row("duration", lambda r: fmt_duration(r.duration) or None), row("epochs (best)", lambda r: epochs_cell(r) or None),
        row("stop reason", lambda r: r.stop_reason), row("device", lambda r: r.device),
        *[row(f"{n} version", lambda r, n=n: getattr(r, f"{n}_version")) for n in ("zoo", "torch", "torchvision")],
        *[row(f"tag {k}", lambda r, k=k: r.tags.get(k)) for k in sorted({k for r in runs for k in r.tags})],
        row("note", lambda r: getattr(r, "system_tags", {}).get(NOTE_TAG)),
    ]
    params = [row(k, lambda r, k=k: r.params.get(k)) for k in sorted({k for r in runs for k in r.params})]
    data = [
        row("path", lambda r: r.dataset_path), row("fingerprint", lambda r: r.dataset_fingerprint),
        row("split", lambda r: r.split_fingerprint), row("classes", lambda r: ", ".join(r.classes) if r.classes else None),
        *[row(f"{part} images", lambda r, part=part: getattr(r, f"{part}_size")) for part in ("train", "val", "test")],
    ]
    overall = ordered_keys({k for r in runs for k in r.metrics if "/" not in k}, MACRO_ORDER)
    metrics = [row(k, lambda r, k=k: r.metrics.get(k)) for k in overall]
    return [("run", [x for x in run_rows if any(v is not None for v in x[1])]), ("params", params),
            ("dataset", [x for x in data if any(v is not None for v in x[1])]), ("test metrics", metrics)]


def _differs(values: Sequence[Any]) -> bool:
    return len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1


def diff_table(runs: Sequence[Any], *, only_differences: bool = False) -> Group:
    """Sections of key | one column per run, rows that differ marked with '≠' and highlighted; with two runs the
    metrics get a Δ column (second minus first)."""
    parts: list[Any] = []
    heads = [f"run {r.id}" + (f" {printable(r.name)}" if r.name else "") for r in runs]
    for title, rows in diff_sections(runs):
        shown = [(k, vs) for k, vs in rows if _differs(vs) or not only_differences]
        if not shown:
            continue
        delta = title == "test metrics" and len(runs) == 2
        table = Table(title=title.capitalize(), title_justify="left", title_style="bold", header_style="bold",
                      box=None, padding=(0, 2, 0, 0))
        table.add_column("", no_wrap=True, width=1)
        table.add_column("", style="dim", overflow="fold")
        for head in heads:
            table.add_column(head, overflow="fold", justify="right" if title == "test metrics" else "left")
        if delta:
            table.add_column("Δ", justify="right")
        for key, values in shown:
            differs = _differs(values)
            cells = [fmt_num(v) if title == "test metrics" else printable(fmt_value(v)) for v in values]
            if delta:
                a, b = values
                cells.append(fmt_num(b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "")
            table.add_row("≠" if differs else "", printable(key), *cells, style="bold yellow" if differs else None)
        parts += [table, Text("")]
    if not parts:
        return Group(Text("The runs do not differ in anything zoo compares."))
    parts.append(Text("≠ marks what differs.", style="dim"))
    return Group(*parts)


def diff_json(runs: Sequence[Any]) -> dict[str, Any]:
    """{"runs": [ids], section: {key: {"values": [...], "differs": bool}}}."""
    out: dict[str, Any] = {"runs": [r.id for r in runs]}
    for title, rows in diff_sections(runs):
        out[title.replace(" ", "_")] = {k: {"values": vs, "differs": _differs(vs)} for k, vs in rows}
    return _clean(out)
