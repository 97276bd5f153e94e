"""``zoo report``: one file on a set of runs, like the seed experiment's report.

Settings shared by the runs and those that differ, the results table, the loss curves (inline SVG in HTML, a PNG
beside Markdown), confusion matrices and the environment the runs recorded. Only recorded facts go in, never the
time of writing, so the same runs always give the same bytes. Reads the registry only; imports no torch.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from zoo import render, render_compare
from zoo.errors import ZooError
from zoo.vocab import F1, LOSS, LOSS_KEYS, OVERALL, TEST, metric_key, metric_order
from zoo.web import data, figures

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}
# Column heads of zoo.vocab's METRIC_ORDER (the one owner of the order); registered metrics follow, by name.
RESULT_METRICS = tuple(({F1: "F1", LOSS: "test loss"}.get(m, m), metric_key(m)) for m in OVERALL)
ENVIRONMENT = (("zoo", "zoo_version"), ("torch", "torch_version"), ("torchvision", "torchvision_version"),
               ("python", "python_version"), ("device", "device"), ("host", "host"))


def format_of(output: Path) -> str:
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ZooError(f"Cannot tell the report format from '{output}': end the name with .html or .md.")
    return fmt


def fmt_when(value: Optional[datetime]) -> str:
    """A recorded (naive UTC) time, the same on every machine."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def recorded_duration(run: Any) -> Optional[float]:
    """Start to finish, or to the last heartbeat for a run that has not finished: never 'now'."""
    start = run.started or run.created
    end = run.finished or run.heartbeat
    return max(0.0, (end - start).total_seconds()) if start and end else None


@dataclass
class Report:
    title: str
    runs: list[Any]
    histories: dict[int, dict[str, list[tuple[int, Optional[float]]]]]
    shared: list[tuple[str, str]]  # setting -> value, the same for every run
    differing: list[tuple[str, list[str]]]  # setting -> value per run (in run order)
    results_head: list[str]
    results: list[list[str]]
    warnings: list[str]
    environment: list[tuple[str, str]]
    notes: list[tuple[str, str]]  # run label -> its note (zoo note)
    by_model: list[list[str]] = field(default_factory=list)  # model, n, mean ± std, interval, vs leader
    verdicts: list[str] = field(default_factory=list)  # the leader against each other model, one sentence each

    @property
    def run_heads(self) -> list[str]:
        return [figures.run_label(run) for run in self.runs]


def _settings(run: Any) -> dict[str, str]:
    sizes = "" if run.train_size is None else f"train {run.train_size}, val {run.val_size}, test {run.test_size}"
    facts = {"model": run.model, "dataset": run.dataset_path or "", "dataset fingerprint": run.dataset_fingerprint or "",
             "split fingerprint": run.split_fingerprint or "", "split sizes": sizes,
             "classes": ", ".join(run.classes or [])}
    facts.update({f"param {key}": render.fmt_value(value) for key, value in sorted(run.params.items())})
    return facts


def build(registry: Any, refs: Sequence[str], group: Optional[str]) -> Report:
    from zoo.store import comparisons

    with registry.connect() as conn:
        ids = data.resolve_runs(registry, conn, refs, group)
        runs = data.run_set(conn, ids, host=registry.host)
        summary = comparisons.by_model(conn, runs.runs)
    views = runs.runs
    settings = [_settings(v) for v in views]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    shared, differing = [], []
    for key in keys:
        values = [s.get(key, "—") for s in settings]
        if len(set(values)) == 1:
            if values[0]:
                shared.append((key, values[0]))
        else:
            differing.append((key, values))
    metrics = [(head, key) for head, key in RESULT_METRICS if any(key in v.metrics for v in views)]
    known = {key for _, key in RESULT_METRICS}
    extra = metric_order({k for v in views for k in v.metrics if "/" not in k and k.startswith(TEST)} - known)
    metrics += [(key[len(TEST):].replace("_", " "), key) for key in extra]  # registered metrics (top5 accuracy...)
    head = ["run", "model", "status", *[h for h, _ in metrics], "epochs (best)", "best val loss", "time"]
    rows = [[figures.run_label(v), v.model, v.status, *[render.fmt_num(v.metrics.get(k)) for _, k in metrics],
             render.epochs_cell(v), render.fmt_num(v.best_val_loss), render.fmt_duration(recorded_duration(v))]
            for v in views]
    environment = []
    for label, attr in ENVIRONMENT:
        values = [getattr(v, attr) or "—" for v in views]
        if len(set(values)) == 1:
            environment.append((label, values[0]))
        else:
            environment.append((label, ", ".join(f"#{v.id} {value}" for v, value in zip(views, values))))
    title = f"Report on group {group}" if group else "Report on run" + ("s " if len(views) > 1 else " ") + \
        ", ".join(f"#{v.id}" for v in views)
    warnings = [w.replace("These runs", "The runs") for w in render.compare_warnings(runs.comparison)]
    notes = [(figures.run_label(v), getattr(v, "system_tags", {}).get(render.NOTE_TAG)) for v in views]
    return Report(title=title, runs=views, histories=runs.histories, shared=shared, differing=differing,
                  results_head=head, results=rows, warnings=warnings, environment=environment,
                  notes=[(label, note) for label, note in notes if note],
                  by_model=render_compare.summary_rows(summary.groups) if summary else [],
                  verdicts=[v.sentence() for v in summary.verdicts] if summary else [])


def write(registry: Any, refs: Sequence[str], group: Optional[str], output: Path, fmt: str) -> list[Path]:
    """Writes the report (and the PNG beside a Markdown one); returns the files written."""
    report = build(registry, refs, group)
    _check_output(output)
    try:
        output.parent.mkdir(exist_ok=True)
        if fmt == "html":
            output.write_text(to_html(report), encoding="utf-8", newline="\n")
            return [output]
        figure = output.with_name(output.stem + "-losses.png")
        has_loss = any(v is not None for h in report.histories.values() for k in LOSS_KEYS
                       for _, v in h.get(k, []))
        if has_loss:
            _png(report, figure)
        output.write_text(to_markdown(report, figure.name if has_loss else None), encoding="utf-8", newline="\n")
        return [output, figure] if has_loss else [output]
    except OSError as exc:
        raise ZooError(f"Cannot write {output}: {exc.strerror or exc}.") from None


def write_study(registry: Any, name: str, output: Path, fmt: str) -> list[Path]:
    """Writes the report on a `zoo tune` study (what `zoo tune show` prints, read by ``zoo.tune.read_study``)."""
    from zoo.tune import read_study

    study = read_study(registry, name)
    _check_output(output)
    text = study_html(study) if fmt == "html" else study_markdown(study)
    try:
        output.parent.mkdir(exist_ok=True)
        output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        raise ZooError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    return [output]


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise ZooError(f"{output} is a directory: give -o a file path such as {output / 'report.html'}.")
    if output.exists() and not output.is_file():
        raise ZooError(f"{output} is not a regular file: give -o a file path such as report.html.")
    if not output.parent.is_dir() and not output.parent.parent.is_dir():  # as zoo export: one missing folder at most
        raise ZooError(f"Cannot create the folder of -o '{output}': '{output.parent.parent}' does not exist "
                       f"either (zoo creates only the file's own folder, '{output.parent.name}').")


def _png(report: Report, path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ZooError("A Markdown report's figure needs matplotlib: pip install 'zoo-vision[plot]' "
                       "(or write -o report.html, which needs no matplotlib).") from None
    render.plot_losses(report.runs, report.histories, path)


# ----------------------------------------------------------------------------- Markdown
def _md(text: Any) -> str:
    """User text for Markdown: no HTML, no control bytes (shown escaped, as in the terminal), and no links of
    its own: brackets are escaped, so [x](javascript:...) in a note stays text."""
    from zoo.errors import printable

    text = html.escape(printable(text), quote=False)
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _table(head: Sequence[Any], rows: Sequence[Sequence[Any]], right: Sequence[bool] = ()) -> str:
    return render.to_markdown([_md(h) for h in head], [[_md(c) for c in row] for row in rows], right)


def to_markdown(report: Report, figure: Optional[str]) -> str:
    parts = [f"# {_md(report.title)}\n"]
    parts += [f"> **Warning:** {_md(w)}\n" for w in report.warnings]
    parts.append("## Results\n")
    numeric = [False, False, False] + [True] * (len(report.results_head) - 3)
    parts.append(_table(report.results_head, report.results, numeric))
    if report.by_model:
        parts.append("### Accuracy by model\n")
        parts.append(_table(render_compare.SUMMARY_HEAD, report.by_model, [False, True, True, True, False]))
        parts.append(render_compare.BY_MODEL_NOTE + "\n")
        parts += [f"- {_md(sentence)}" for sentence in report.verdicts] + ([""] if report.verdicts else [])
    if report.notes:
        parts.append("## Notes\n")
        parts += [f"- **{_md(label)}**: {_md(note)}" for label, note in report.notes]
        parts.append("")
    parts.append("## Settings\n")
    if report.shared:
        parts += ["Shared by every run:\n", _table(["setting", "value"], report.shared)]
    if report.differing:
        parts += ["Different between the runs:\n",
                  _table(["setting", *report.run_heads], [[k, *values] for k, values in report.differing])]
    elif len(report.runs) > 1:
        parts.append("Every setting is the same.\n")
    parts.append("## Loss curves\n")
    if figure:
        parts.append(f"![Training and validation loss per epoch (star: best epoch)]({figure})\n")
    else:
        parts.append("No loss history recorded.\n")
    matrices = [run for run in report.runs if run.confusion and run.classes]
    if matrices:
        parts.append("## Confusion matrices (test set; rows: true class, columns: predicted)\n")
        for run in matrices:
            parts.append(f"### {_md(figures.run_label(run))}\n")
            rows = [[run.classes[i] if i < len(run.classes) else i, *line] for i, line in enumerate(run.confusion)]
            parts.append(_table(["true \\ predicted", *run.classes], rows, [False] + [True] * len(run.classes)))
    parts.append("## Environment\n")
    parts.append(_table(["", "recorded"], report.environment))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- HTML
def to_html(report: Report) -> str:
    from zoo.web.app import HERE, templates

    css = (HERE / "static" / "zoo.css").read_text(encoding="utf-8")
    matrices = [(run, figures.confusion(run.classes, run.confusion, figures.run_label(run)))
                for run in report.runs if run.confusion and run.classes]
    return templates().get_template("report.html").render(
        report=report, css=css, curves=figures.overlay_curves(report.runs, report.histories),
        matrices=matrices, by_model_note=render_compare.BY_MODEL_NOTE,
    )


# ----------------------------------------------------------------------------- a zoo tune study
def _study_title(study: Any) -> str:
    return f"Report on study {study.name}"


def _code(text: str) -> str:
    """A fenced Markdown code block, its fence longer than any run of backticks in ``text``."""
    import re

    from zoo.errors import printable

    text = printable(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}\n"


def study_markdown(study: Any) -> str:
    rows = study.rows()
    facts = [("model", study.model), ("objective", f"{study.direction} {study.metric} (validation split)"),
             ("space", ", ".join(f"{k} {v}" for k, v in sorted(study.space.items())))]
    if study.fixed:
        facts.append(("fixed", ", ".join(f"{k} {v}" for k, v in sorted(study.fixed.items()))))
    facts.append(("trials", f"{len(rows)} ({study.finished} finished)"))
    parts = [f"# {_md(_study_title(study))}\n", _table(["", "study"], facts), "## Trials\n"]
    head = ["trial", "state", study.metric, "run", "run status", "epochs", *study.params, "time"]
    cells = [[row.trial, row.shown_state, row.value, "—" if row.run is None else f"#{row.run}", row.run_status, row.epochs,
              *row.params, row.time] for row in rows]
    parts.append(_table(head, cells, [True, False, True, True, False, True] + [True] * (len(study.params) + 1)))
    parts.append("## Best trial\n")
    if study.best:
        run = "—" if study.best["run"] is None else f"#{study.best['run']}"
        parts.append(f"Trial {study.best['trial']}, run {run}, {_md(study.metric)} "
                     f"{render.fmt_num(study.best['value'])}. Reproduce it:\n")
        parts.append(_code(study.best["command"]))
    else:
        parts.append("No trial has completed yet.\n")
    parts.append("## Parameter importances\n")
    if study.importances:
        parts.append(_table(["parameter", "importance"], [[k, f"{v:.2f}"] for k, v in study.importances.items()],
                            [False, True]))
    else:
        parts.append(f"{_md(study.importance_note)}\n")
    return "\n".join(parts)


def study_html(study: Any) -> str:
    from zoo.web.app import HERE, templates

    css = (HERE / "static" / "zoo.css").read_text(encoding="utf-8")
    return templates().get_template("report_study.html").render(
        study=study, rows=study.rows(), title=_study_title(study), css=css)
