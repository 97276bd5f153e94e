"""What ``zoo train`` shows while the training service works: the plan, a progress bar, one line per epoch and
per run, and the final table; and ``zoo tune``'s line per trial. Imported only when a command trains.

Paths, names and messages are user text: the consoles show them as given (no markup); colour comes from Text.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from zoo.errors import console, print_warning
from zoo.data import class_counts
from zoo.render import STATUS_STYLES, fmt_duration, fmt_num, fmt_value
from zoo.spec import RunSpec
from zoo.spec import option_text as spec_text
from zoo.training import Reporter, RunOutcome
from zoo.tune import TrialEnd, TuneReporter
from zoo.vocab import Status, TEST


def epoch_line(model: str, epoch: int, epochs: int, values: Any, improved: bool) -> Text:
    """One finished epoch as rich Text (plain text, plus a green "best" when validation loss improved)."""
    line = Text(f"{model} epoch {epoch:>{len(str(epochs))}}/{epochs}  train loss {fmt_num(values.train_loss)} "
                f"acc {fmt_num(values.train_acc, 3)}  val loss {fmt_num(values.val_loss)} "
                f"acc {fmt_num(values.val_acc, 3)}  {values.images_per_sec:.0f} img/s  "
                f"{values.seconds:.1f}s")
    if improved:
        line.append("  ").append("best", style="green")
    return line


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def plan_table(specs: Sequence[RunSpec], varied: Sequence[str], group: str) -> Table:
    """The runs a command will train: one row each, the options that differ between them as columns."""
    table = Table(title=f"Plan: {plural(len(specs), 'run')}, group {group}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right")
    for name in varied:
        table.add_column(name, no_wrap=True)
    for i, spec in enumerate(specs, 1):
        table.add_row(str(i), *(fmt_value(getattr(spec, name)) for name in varied))
    return table


def dry_run_report(checked: Any) -> list:
    """What ``zoo train --dry-run`` checked, as printable lines: each run with its image size, device and starting
    weights, every resolved option the runs share (the recipe's values included), each data source, each weights
    file. ``checked``: a ``zoo.training.plan.DryRun``."""
    from zoo.spec import OPTIONS

    plan = checked.plan
    runs = plan.runs
    varied = [n for n in (plan.varied or ["model"]) if n not in ("image_size", "device", "precision", "weights")]
    files = {w.model: w for w in checked.weights}
    table = Table(title=f"Plan: {plural(len(runs), 'run')}, group {plan.group} (dry run: nothing is trained or "
                        f"recorded)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right")
    for name in varied:
        table.add_column(name, overflow="fold")
    for header in ("image size", "device", "starts from"):
        table.add_column(header, overflow="fold")
    for i, run in enumerate(runs, 1):
        spec, res = run.spec, run.resolved
        start = "random weights"
        if spec.weights:
            start = f"--weights {spec.weights}"
        elif spec.pretrained:
            found = files.get(spec.model)
            start = "pretrained" + ("" if found is None else f" ({'found' if found.present else 'missing'})")
        table.add_row(str(i), *(fmt_value(getattr(spec, n)) for n in varied),
                      f"{res.image_size} px", f"{res.device} ({res.precision})", start)
    lines: list = [table]
    skip = set(varied) | {"model", "data", "image_size", "device", "precision", "weights", "pretrained", "workers"}
    shared = [f"{name} {fmt_value(getattr(runs[0].spec, name))}" for name in OPTIONS if name not in skip
              and len({repr(getattr(r.spec, name)) for r in runs}) == 1 and getattr(runs[0].spec, name) is not None]
    lines.append(Text(("Every run: " if len(runs) > 1 else "Options: ") + ", ".join(shared)))
    for data, source, problem in checked.data:
        if problem:
            lines.append(Text(f"Data {data}: {problem}", style="red"))
            continue
        scan = source.scan
        counts = class_counts(scan.classes, [label for _, label, _ in scan.files])
        text = (f"Data {data}: {source.root}, {plural(len(scan.files), 'image')} in {plural(len(scan.classes), 'class')}"
                f" ({', '.join(f'{c} {n}' for c, n in counts.items())}); split checked")
        if scan.skipped:
            text += f"; {plural(len(scan.skipped), 'file')} skipped (not images)"
        lines.append(Text(text))
    for w in checked.weights:
        if w.present:
            lines.append(Text(f"Weights {w.model}: {w.path} found"))
        else:
            lines.append(Text(f"Weights {w.model}: {w.path} missing (from {w.url})", style="yellow"))
    return lines


def summary_table(outcomes: Sequence[RunOutcome], varied: Sequence[str] = (), width: Optional[int] = None) -> Table:
    """The runs of one command, best test accuracy first (runs without one last), fitted to ``width`` columns
    (default: the terminal's)."""
    table = Table(title="Trained in this command", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True, show_edge=False)  # two spaces between columns, none outside
    shown = [name for name in varied if name != "model"]
    headers = (("Run", True), ("Model", False), *((n, True) for n in shown), ("Result", False), ("Best", True),
               ("Epochs", True), ("Test acc", True), ("F1", True), ("Loss", True), ("Time", True))
    accuracy = TEST + "accuracy"
    ordered = sorted(outcomes, key=lambda o: (o.metrics.get(accuracy) is None, -(o.metrics.get(accuracy) or 0.0)))
    rows = []
    for o in ordered:
        result = str(o.stop_reason or o.status)
        if o.status != Status.COMPLETED and result != str(o.status):
            result = f"{o.status}: {result}"
        rows.append((str(o.run_id), o.model, *(fmt_value(getattr(o.planned.spec, n)) for n in shown), result,
                     str(o.best_epoch or "—"), str(o.epochs_run or 0), fmt_num(o.metrics.get(accuracy)),
                     fmt_num(o.metrics.get(TEST + "f1")), fmt_num(o.metrics.get(TEST + "loss")),
                     fmt_duration(o.seconds)))
    # Run and Model tell the rows apart: never cut (no_wrap, as wide as their longest value). The other columns
    # shrink on a narrow terminal: headers wrap first ('Test acc' on two lines) while every value still fits;
    # when even that is too wide, values fold onto the next line (nothing is ever replaced by '…').
    names = [h for h, _ in headers]
    whole = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(names)]
    values = [max([len(row[i]) for row in rows] + [min(4, len(h))]) for i, h in enumerate(names)]
    numbers = {"Best", "Epochs", "Test acc", "F1", "Loss", "Time"}
    width = console().width if width is None else width
    room = width - 2 * (len(names) - 1)  # what the cells may take: two spaces between columns
    widths = None
    # the columns whose values stay whole: all of them, else all but Result, else the numbers
    for kept in (set(names), set(names) - {"Result"}, numbers):
        base = [whole[i] if i < 2 else values[i] if h in kept else min(4, whole[i]) for i, h in enumerate(names)]
        if sum(base) <= room:  # then widen columns, left to right, until each shows its header on one line
            spare = room - sum(base)
            for i in range(2, len(names)):
                more = min(spare, whole[i] - base[i])
                base[i], spare = base[i] + max(more, 0), spare - max(more, 0)
            widths = base
            break
    for index, (header, right) in enumerate(headers):
        identifying = header in ("Run", "Model")
        table.add_column(header, justify="right" if right else "left", no_wrap=identifying, overflow="fold",
                         width=widths[index] if widths else None, min_width=whole[index] if identifying else None)
    for row in rows:
        table.add_row(*row)
    return table


class Display(Reporter):
    """Progress bar (stderr, terminals only) and one line per epoch and run (stdout), both off with --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.out = console()
        self.err = console(stderr=True)
        self.progress = None
        self.task = None
        self.run: Optional[Any] = None  # the PlannedRun in progress

    # ----------------------------------------------------------------------------------- plumbing
    def line(self, text) -> None:
        if not self.quiet:
            self.out.print(text)

    def start(self, description: str, total: int) -> None:
        if self.quiet or not self.err.is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}", markup=False),
                                     TimeRemainingColumn(), console=self.err, transient=True)
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total, info="")

    def update(self, completed: int, info: str = "", total: Optional[int] = None) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed, info=info, total=total)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None

    def stop_cause(self, exc: BaseException) -> str:
        """Why a run was stopped from outside, in words (rich quiets a console whose output pipe closed)."""
        return ("its output was closed (broken pipe)" if self.out.quiet and not self.quiet
                else super().stop_cause(exc))

    # ----------------------------------------------------------------------------------- reports
    def on_message(self, text: str) -> None:
        self.line(text)

    def on_warning(self, text: str) -> None:
        self.stop()
        print_warning(text)

    def on_decode(self, done: int, total: int) -> None:
        if self.task is None:
            self.start("Checking images", total)
        self.update(done, total=total)

    def on_data(self, images, split, planned) -> None:
        self.stop()
        counts = ", ".join(f"{c} {n}" for c, n in images.counts().items())
        where = f"in memory at {images.cache_side} px" if images.cache is not None else "streamed from disk"
        self.line(f"Data {images.root}: {len(images.samples)} images, {len(images.classes)} classes ({counts}); "
                  f"split {len(split.train)}/{len(split.val)}/{len(split.test)} (split seed {planned.spec.split_seed}), {where}")

    def on_run_start(self, run_id: int, planned) -> None:
        self.run = planned
        spec, res = planned.spec, planned.resolved
        self.line(f"Run {run_id}: {spec.model} at {res.image_size} px on {res.device} ({res.precision}), recipe "
                  f"{spec.recipe} ({spec.optimizer} lr {spec.lr:g}, {spec.schedule}, augment {spec.augment}"
                  f"{'' if spec.hflip else ' no flips'}{f', ema {spec.ema:g}' if spec.ema else ''}"
                  f"{', tta' if spec.tta else ''}), batch {spec.batch_size}, up to {spec.epochs} epochs")

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        self.start(f"{self.run.spec.model} epoch {epoch}/{self.run.spec.epochs}", batches)

    def on_batch(self, epoch, batch, batches, running_loss, images_per_sec) -> None:
        self.update(batch, f"loss {running_loss:.4f}  {images_per_sec:.0f} img/s")

    def on_epoch_end(self, epoch: int, values, improved: bool) -> None:
        self.stop()
        self.line(epoch_line(self.run.spec.model, epoch, self.run.spec.epochs, values, improved))

    def on_run_end(self, outcome: RunOutcome) -> None:
        self.stop()
        name = f"Run {outcome.run_id} ({outcome.model})"
        if outcome.status == Status.FAILED:
            print_warning(f"{name} failed: {outcome.error}")
        elif outcome.status == Status.INTERRUPTED and (outcome.error or "").startswith("Stopped: "):
            print_warning(f"{name} recorded as interrupted after {outcome.epochs_run} epoch(s): "
                          f"{outcome.error[len('Stopped: '):]}")
        elif outcome.status == Status.COMPLETED:
            self.line(f"{name}: {str(outcome.stop_reason).replace('_', ' ')} after {outcome.epochs_run} epoch(s), "
                      f"best epoch {outcome.best_epoch}, test accuracy {fmt_num(outcome.metrics.get(TEST + 'accuracy'))}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else spec_text(value)


class TuneDisplay(TuneReporter):
    """``zoo tune``: one live line per trial (trial k/N, params, epoch, best so far) on a terminal's stderr, and one
    plain line per finished trial on stdout (also in pipes); --quiet shows neither. The data's warnings come once."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.out = console()
        self.err = console(stderr=True)
        self.status = None
        self.head = ""
        self.best: Optional[float] = None
        self.epochs: Optional[int] = None
        self.warned: set[str] = set()

    def line(self, text) -> None:
        if not self.quiet:
            self.out.print(text)

    def live(self, text: str) -> None:
        if self.quiet or not self.err.is_terminal:
            return
        if self.status is None:
            self.status = self.err.status(Text(text))
            self.status.start()
        else:
            self.status.update(Text(text))

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def _best(self) -> str:
        return f"  best {fmt_num(self.best)}" if self.best is not None else ""

    def on_warning(self, text: str) -> None:
        if text not in self.warned:
            self.warned.add(text)
            self.stop()
            print_warning(text)

    def on_trial_start(self, trial, index, total, params, best) -> None:
        shown = " ".join(f"{k} {_short(v)}" for k, v in params.items())
        self.head = f"trial {index}/{total} (#{trial.number})  {shown}"
        self.best = best
        self.live(self.head + self._best())

    def on_run_start(self, run_id, planned) -> None:
        self.epochs = planned.spec.epochs
        self.live(f"{self.head}  run {run_id}{self._best()}")

    def on_batch(self, epoch, batch, batches, running_loss, images_per_sec) -> None:
        self.live(f"{self.head}  epoch {epoch}/{self.epochs} batch {batch}/{batches} loss {running_loss:.4f}"
                  f"{self._best()}")

    def on_epoch_end(self, epoch, values, improved) -> None:
        self.live(f"{self.head}  epoch {epoch}/{self.epochs} val loss {fmt_num(values.val_loss)} acc "
                  f"{fmt_num(values.val_acc, 3)}{self._best()}")

    def on_trial_end(self, end: TrialEnd) -> None:
        self.stop()
        shown = " ".join(f"{k} {_short(v)}" for k, v in end.params.items())
        line = Text(f"trial {end.index}/{end.total} (#{end.number}) run {end.run_id}  {shown}  ")
        styles = {"complete": "green", "pruned": STATUS_STYLES["pruned"], "failed": "red"}
        line.append(end.state, style=styles[end.state])
        if end.state == "failed":
            line.append(f" ({end.error})")
        else:
            line.append(f" after {end.epochs} epoch(s)  value {fmt_num(end.value)}")
        line.append(f"  best {fmt_num(end.best)}")
        self.line(line)
