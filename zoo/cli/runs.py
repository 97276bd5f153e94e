"""Commands over recorded runs: list-runs, show, compare, delete, plot (and migrate).

Thin: parse options, query the store, hand the views to zoo.render. The read commands open the registry
read-only and never change the file. Imports stay inside the commands so `zoo --help` stays fast.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from zoo.cli.app import app, check_choice, open_registry
from zoo.errors import ZooError
from zoo.filters import STATUS_CHOICES, parse_since, run_filter
from zoo.vocab import ACCURACY, LOSS, LOSS_KEYS, TRAIN_ACC, VAL_ACC

DEFAULT_TOP = 20
DEFAULT_LIST = 20  # list-runs rows in a table (json and csv list every run unless --limit)
MAX_COUNT = 1_000_000_000  # --limit, --top: what a database's LIMIT takes on every backend


DATA_HELP = "Only runs trained on this dataset: a name (demo), a folder, or a fingerprint prefix (from show)."


GROUP_HELP = "Only the runs of one `zoo train` command (its group id, shown by `show`)."
WHERE_HELP = ("Only runs matching a filter: \"accuracy > 0.9 and lr <= 0.01 and model glob 'resnet*' and "
              "tag.owner = alice\" (README: Filtering runs).")


def where_option():
    return typer.Option(None, "--where", "-w", metavar="FILTER", help=WHERE_HELP)


@contextmanager
def short_lived():
    """Around a read command, which prints and exits: no cyclic garbage collection.

    Start-up leaves ~half a million long-lived objects (typer, pydantic, SQLAlchemy, rich) that every full
    collection, and the final one at interpreter exit, walks again: 50-100 ms, a quarter of such a command's
    time (BENCHMARKS.md). Objects are still freed by reference counting; collection is back on when
    the command returns (under CliRunner too), and at exit gc.freeze() lets the last collection skip them.
    """
    import atexit
    import gc

    global _freeze_registered
    if not _freeze_registered:
        atexit.register(gc.freeze)
        _freeze_registered = True
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_freeze_registered = False


def read_command(function):
    """Marks a command that only reads the registry and prints: it runs inside short_lived()."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with short_lived():
            return function(*args, **kwargs)

    return wrapper


def plain_console():
    from zoo.errors import console

    # markup off, control characters escaped: run names, params and class names are user text, shown as typed
    return console(soft_wrap=False)


def plain_echo(text: str) -> None:
    """Plain output (json, csv, markdown, messages) with the control characters of user text escaped."""
    from zoo.errors import printable

    typer.echo(printable(text, keep_lines=True), nl=not text.endswith("\n"))


def _positive(option: str, value: Optional[int]) -> Optional[int]:
    if value is not None and value < 1:
        raise ZooError(f"{option} must be at least 1 (got {value}); use --all for no limit.")
    if value is not None and value > MAX_COUNT:
        raise ZooError(f"{option} must be at most {MAX_COUNT:,} (got {value}); use --all for no limit.")
    return value


# ----------------------------------------------------------------------------- commands
FORMAT_HELP = "Output format: {}."


@app.command("list-runs")
@read_command
def list_runs(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only models matching this pattern (resnet*)."),
    status: Optional[str] = typer.Option(None, "--status", help=f"Only runs with this status: {', '.join(STATUS_CHOICES)}."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", "-t", help="Only runs tagged key=value (repeatable)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only runs started since an ISO date or an age (2h, 3d)."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help=GROUP_HELP),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="NAME|PATH|FINGERPRINT", help=DATA_HELP),
    where: Optional[str] = where_option(),
    deleted: bool = typer.Option(False, "--deleted", help="List the runs in the trash (zoo delete) instead."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", metavar="N",
                                        help=f"At most N runs (default: {DEFAULT_LIST} in a table, all in json/csv)."),
    all_runs: bool = typer.Option(False, "--all", "-a", help="Show every matching run."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP.format("table, json, csv")),
) -> None:
    """List recorded runs, newest first."""
    fmt = check_choice("--format", fmt, ("table", "json", "csv"))
    flt = run_filter(model=model, status=status, tag=tag, since=since, group=group, data=data, where=where)
    flt.deleted = deleted
    _positive("--limit", limit)
    if limit is None and fmt == "table":
        limit = DEFAULT_LIST  # a table is for reading; json and csv are for scripts, which get every run
    from zoo import render
    from zoo.errors import print_warning
    from zoo.store import queries

    with open_registry(readonly=True) as reg, reg.connect() as conn:
        runs, total = queries.list_runs(conn, flt, limit=None if all_runs else limit, host=reg.host)
    if fmt == "json":
        plain_echo(render.to_json([render.run_record(r) for r in runs]))
    elif fmt == "csv":
        plain_echo(render.runs_csv(runs))
    elif not runs and deleted and not flt.query:
        typer.echo("The trash is empty.")
    elif not runs and not _filtered_args(flt.model, flt.status, flt.tags, flt.since or flt.group or flt.data or flt.query):
        typer.echo("No runs recorded yet.")
    elif runs:
        console = plain_console()
        console.print(render.runs_table(runs, total, width=console.width))
    if not runs and _filtered_args(flt.model, flt.status, flt.tags, flt.since or flt.group or flt.data or flt.query):
        raise ZooError("No runs match these filters; `zoo list-runs` alone lists every run.")  # like zoo models
    if total > len(runs):  # notes go to stderr, once, whatever the format
        print_warning(f"{len(runs)} of {total} matching runs listed (--limit {limit}); --all lists every one.")


@app.command("show")
@read_command
def show(
    run: str = typer.Argument(..., help="Run id (from list-runs), its name or a uuid prefix."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP.format("table, json")),
) -> None:
    """Show one run: params, per-epoch history, test metrics, per-class table, confusion matrix, evaluations."""
    fmt = check_choice("--format", fmt, ("table", "json"))
    from zoo import render

    with open_registry(readonly=True) as reg:
        view = reg.get_run(run)
        history = reg.history(view.id)
    if fmt == "json":
        plain_echo(render.to_json(render.run_json(view, history)))
    else:
        plain_console().print(render.run_detail(view, history))


def _comparisons(reg, metric, runs, by, model, status, tag, since, top, all_runs, group=None, data=None, where=None):
    """[(None, Comparison)] for runs of one dataset; [(DatasetGroup, Comparison), ...] when the runs to rank were
    trained on several datasets, the one with most runs first (each ranked and limited to --top on its own)."""
    from dataclasses import replace

    from zoo.components import metric_directions
    from zoo.plugins import get_plugins
    from zoo.store import queries

    _positive("--top", top)
    directions = metric_directions(get_plugins().components("metric"))  # registered metrics' higher_is_better
    with reg.connect() as conn:
        ids = [reg.resolve(ref, conn) for ref in runs] if runs else None
        flt = run_filter(model=model, status=status, tag=tag, since=since, ids=ids, group=group, data=data,
                         where=where)
        if by is not None and by.lower() == "model":
            by = "model"
        if all_runs:
            top = None
        elif top is None and not ids:
            top = DEFAULT_TOP
        groups = queries.dataset_groups(conn, metric, flt)
        if len(groups) < 2:
            return [(None, queries.compare(conn, metric, flt, by=by, top=top, host=reg.host, directions=directions))]
        sections = []
        for g in groups:
            cmp = queries.compare(conn, metric, replace(flt, fingerprint=g.fingerprint or ""), by=by, top=top,
                                  host=reg.host, directions=directions)
            sections.append((g, cmp if not sections else replace(cmp, missing=[])))  # runs lacking it: said once
        return sections


def _dataset_label(group) -> str:
    where = ", ".join(group.paths) or "folder not recorded"
    fingerprint = f"fingerprint {group.fingerprint[:12]}" if group.fingerprint else "no fingerprint recorded"
    return f"{where} ({fingerprint}, {group.runs} run{'s' if group.runs != 1 else ''})"


def _print_sections(reg, sections, fmt: str) -> None:
    """compare's output when the runs come from several datasets: a ranking per dataset, never one mixed."""
    from dataclasses import replace

    from zoo import render
    from zoo.errors import print_warning

    print_warning(f"These runs were trained on {len(sections)} different datasets: each is ranked on its own "
                  "(--data NAME|PATH|FINGERPRINT picks one).")
    for line in render.compare_warnings(sections[0][1]):
        if line.startswith("Run "):  # the runs asked for that lack the metric
            print_warning(line)
    if fmt != "table":  # the table prints each dataset's notes above its ranking
        for g, cmp in sections:
            for line in render.compare_warnings(replace(cmp, missing=[])):
                print_warning(f"Dataset {_dataset_label(g)}: {line}")
    if fmt == "json":
        records = []
        for g, cmp in sections:
            records += [{**rec, "dataset_path": g.paths[0] if g.paths else None} for rec in render.compare_records(cmp)]
        plain_echo(render.to_json(records))
        return
    if fmt == "csv":
        columns, rows = ["dataset_fingerprint"], []
        for g, cmp in sections:
            names = render.compare_columns(cmp)
            columns += [c for c in names if c not in columns]
            rows += [{"dataset_fingerprint": g.fingerprint, **dict(zip(names, row))}
                     for row in render.compare_rows(cmp, numbers=True)]
        plain_echo(render.to_csv(columns, [[row.get(c) for c in columns] for row in rows]))
        return
    console = plain_console() if fmt == "table" else None
    said: set = set()  # the columns a narrow terminal hides are the same in every section: said once
    for index, (g, cmp) in enumerate(sections):
        if fmt == "markdown":
            plain_echo(("\n" if index else "") + f"### Dataset {_dataset_label(g)}\n\n" + render.compare_markdown(cmp))
            continue
        from rich.text import Text

        console.print(Text(("\n" if index else "") + f"Dataset {_dataset_label(g)}", style="bold"))
        for line in render.compare_warnings(replace(cmp, missing=[])):
            print_warning(line)

        def losses(cmp=cmp):  # read only when the sparkline column is shown
            from zoo.store import queries

            with reg.connect() as conn:
                return queries.histories(conn, [r.id for r in cmp.runs], queries.LOSS_KEYS)

        table = render.compare_table(cmp, width=console.width, losses=losses, say_hidden=False)
        hidden = render.hidden_caption(table.hidden, "markdown/csv")
        if hidden and hidden not in said:
            said.add(hidden)
            table.caption = f"{table.caption} {hidden}"
        console.print(table)


METRIC_HELP = "Metric to rank by: accuracy, f1, precision, recall, loss or any recorded key (test_f1/cat)."


@app.command("compare")
@read_command
def compare(
    runs: Optional[List[str]] = typer.Argument(None, help="Runs to compare (default: all runs with the metric)."),
    metric: str = typer.Option("accuracy", "--metric", "-M", help=METRIC_HELP),
    by: Optional[str] = typer.Option(None, "--by", metavar="model|PARAM",
                                     help="Group runs by model, or by the value of a param (lr): n, mean ± std, "
                                          "min, max and 95% interval of each, best mean first."),
    best: bool = typer.Option(False, "--best", help="With --by: the best run of each group instead of the mean."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help=GROUP_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only models matching this pattern."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs with this status."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", "-t", help="Only runs tagged key=value (repeatable)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only runs started since an ISO date or an age."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="NAME|PATH|FINGERPRINT", help=DATA_HELP),
    where: Optional[str] = where_option(),
    top: Optional[int] = typer.Option(None, "--top", "-n", help=f"Show the best N (default {DEFAULT_TOP})."),
    all_runs: bool = typer.Option(False, "--all", "-a", help="Show every ranked run."),
    fmt: str = typer.Option("table", "--format", "-f", help=FORMAT_HELP.format("table, json, csv, markdown")),
) -> None:
    """Rank runs by a test metric, best first, with the params that differ (each dataset on its own).

    Runs of different datasets are never ranked together; --data picks one dataset. `compare A B` (two models,
    PARAM=VALUE groups or runs) says whether their difference is real: the paired accuracy gap and McNemar's test."""
    fmt = check_choice("--format", fmt, ("table", "json", "csv", "markdown"))
    from zoo import render
    from zoo.cli import honest
    from zoo.errors import print_warning

    with open_registry(readonly=True) as reg:
        nothing = _nothing_to_compare(reg, runs)
        if nothing:
            plain_echo("[]" if fmt == "json" else "" if fmt == "csv" else nothing)
            return
        if honest.wants_verdict(reg, runs):
            flt = run_filter(model=model, status=status, tag=tag, since=since, group=group, data=data, where=where)
            grouped, found = honest.versus(reg, runs, metric, flt)
            honest.print_versus(grouped, found, fmt, plain_echo, plain_console)
            return
        if by is not None and not best:
            _positive("--top", top)
            flt = run_filter(model=model, status=status, tag=tag, since=since, group=group, data=data, where=where)
            by = "model" if by.lower() == "model" else by
            sections = honest.grouped_sections(reg, metric, flt, by, None if all_runs else top)
            honest.print_grouped(sections, fmt, plain_echo, plain_console, _dataset_label)
            return
        sections = _comparisons(reg, metric, runs, by, model, status, tag, since, top, all_runs, group, data, where)
        if len(sections) > 1:
            _print_sections(reg, sections, fmt)
            return
        cmp = sections[0][1]
        if not cmp.runs and not runs and _filtered_args(model, status, tag, since or data or group or where):
            if fmt == "json":
                plain_echo("[]")
            raise ZooError(f"No runs with {cmp.metric} match these filters; `zoo compare` alone ranks every run "
                           "with it.")  # nothing matched: exit 1, like zoo models and zoo list-runs
        if fmt == "table" and not cmp.runs and cmp.missing and len(cmp.missing) == len(runs or ()):
            plain_echo(_lacking(cmp.missing, cmp.metric))  # every run asked for lacks the metric: say so once
            return
        for line in render.compare_warnings(cmp):
            print_warning(line)
        if fmt == "json":
            plain_echo(render.to_json(render.compare_records(cmp)))
        elif fmt == "csv":
            plain_echo(render.to_csv(render.compare_columns(cmp), render.compare_rows(cmp, numbers=True)))
        elif fmt == "markdown":
            plain_echo(render.compare_markdown(cmp))
        elif not cmp.runs and not _filtered_args(model, status, tag, since or data or group or where):
            plain_echo(f"No run has {cmp.metric} yet.")
        else:
            console = plain_console()

            def losses():  # read only when the sparkline column is shown
                from zoo.store import queries

                with reg.connect() as conn:
                    return queries.histories(conn, [r.id for r in cmp.runs], queries.LOSS_KEYS)

            console.print(render.compare_table(cmp, width=console.width, losses=losses))
        if runs and len(runs) == 2 and len(cmp.runs) == 2 and fmt in ("table", "markdown"):
            found = honest.run_pair_verdict(reg, [r.id for r in cmp.runs])
            if found is not None and found.gap is not None:
                plain_echo(("\n" if fmt == "markdown" else "") + found.sentence())


def _filtered_args(model, status, tag, since) -> bool:
    return bool(model or status or tag or since)


def _nothing_to_compare(reg, runs) -> Optional[str]:
    """What to say when no run in the registry has test metrics yet (None when some have)."""
    from zoo.store import queries

    with reg.connect() as conn:
        if queries.has_metrics(conn):
            return None
        if runs:
            ids = list(dict.fromkeys(reg.resolve(ref, conn) for ref in runs))
            return _lacking(queries.run_views(conn, ids, host=reg.host), "test metrics")
        _, total = queries.list_runs(conn, queries.RunFilter(), limit=1, host=reg.host)
    if not total:
        return "No runs recorded yet: nothing to compare."
    return (f"Nothing to compare yet: none of the {total} run{'s' if total != 1 else ''} has test metrics "
            "(a run records them when it finishes training). `zoo list-runs` shows them.")


def _lacking(views, what: str) -> str:
    listing = ", ".join(f"run {v.id} ({v.model}, {v.display_status})" for v in views)
    return f"Nothing to compare: {listing} {'has' if len(views) == 1 else 'have'} no {what} yet."


@app.command("plot")
@read_command
def plot(
    runs: Optional[List[str]] = typer.Argument(None, help="Runs to plot (default: the runs compare would show)."),
    output: Path = typer.Option(..., "--output", "-o", help="Image file to write (.png, .svg, .pdf)."),
    metric: str = typer.Option("loss", "--metric", "-M", metavar="loss|accuracy",
                               help="The curves: train and validation loss, or accuracy."),
    rank_by: str = typer.Option("accuracy", "--rank-by", metavar="METRIC",
                                help="Without RUNs: plot the best runs by this test metric, as compare ranks them."),
    by: Optional[str] = typer.Option(None, "--by", metavar="model|PARAM",
                                     help="The best run of each model, or of each value of a param."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help=GROUP_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only models matching this pattern."),
    status: Optional[str] = typer.Option(None, "--status", help="Only runs with this status."),
    tag: Optional[List[str]] = typer.Option(None, "--tag", "-t", help="Only runs tagged key=value (repeatable)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only runs started since an ISO date or an age."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="NAME|PATH|FINGERPRINT", help=DATA_HELP),
    where: Optional[str] = where_option(),
    top: Optional[int] = typer.Option(None, "--top", "-n", help=f"Plot the best N (default {DEFAULT_TOP})."),
    all_runs: bool = typer.Option(False, "--all", "-a", help="Plot every ranked run."),
    log_y: Optional[bool] = typer.Option(None, "--log-y/--linear-y", show_default=False,
                                         help="Log or linear y axis (default: log when one curve peaks over "
                                              "30 times the median point, which would flatten the others)."),
) -> None:
    """Plot train and validation curves (loss or accuracy) of runs side by side, best epoch starred."""
    curves = check_choice("--metric", metric, tuple(CURVES))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ZooError("zoo plot needs matplotlib, an optional extra: pip install 'zoo-vision[plot]'") from None
    from zoo import render
    from zoo.errors import print_warning
    from zoo.store import queries

    keys = CURVES[curves]
    with open_registry(readonly=True) as reg:
        if runs:
            with reg.connect() as conn:
                ids = [reg.resolve(ref, conn) for ref in runs]
                views = queries.run_views(conn, list(dict.fromkeys(ids)), host=reg.host)
        else:
            with reg.connect() as conn:
                has_metrics = queries.has_metrics(conn)
            if has_metrics:
                sections = _comparisons(reg, rank_by, None, by, model, status, tag, since, top, all_runs, group, data,
                                        where)
                views = [v for _, cmp in sections for v in cmp.runs]
                if len(sections) > 1:
                    print_warning(f"These runs were trained on {len(sections)} different datasets, plotted together "
                                  "(--data NAME|PATH|FINGERPRINT picks one).")
            else:  # nothing has finished with test metrics yet: plot the newest runs
                with reg.connect() as conn:
                    flt = run_filter(model=model, status=status, tag=tag, since=since, group=group, data=data,
                                     where=where)
                    limit = None if all_runs else _positive("--top", top) or DEFAULT_TOP
                    views, _ = queries.list_runs(conn, flt, limit=limit, host=reg.host)
        with reg.connect() as conn:
            losses = queries.histories(conn, [v.id for v in views], keys)

    if not views:
        raise ZooError("No runs match these filters: nothing to plot. `zoo list-runs` with the same filters lists "
                       "what there is.")

    def has_curve(run_id: int) -> bool:
        return any(v is not None for points in losses.get(run_id, {}).values() for _, v in points)

    if not any(has_curve(v.id) for v in views):
        raise ZooError(f"No {curves} history to plot: the runs chosen have no recorded epochs with a finite {curves}.")
    empty = [v for v in views if not has_curve(v.id)]
    if empty:
        print_warning(f"Left out of the plot, no finite {curves} recorded: "
                      + ", ".join(f"run {v.id} ({v.model}, {v.display_status})" for v in empty) + ".")
        views = [v for v in views if has_curve(v.id)]
    if log_y is None:
        dwarf = render.dwarfing_run(views, losses, keys)
        log_y = dwarf is not None
        if dwarf:
            run, peak = dwarf
            print_warning(f"Log y axis: run {run.id} ({run.model}) reaches {peak:.4g}, over "
                          f"{render.DWARF_RATIO:g} times the median point; --linear-y keeps it linear.")
    output = _plot_path(output.expanduser())
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        render.plot_losses(views, losses, output, keys=keys, log_y=log_y)
    except ValueError as exc:  # e.g. an image format matplotlib does not know
        raise ZooError(f"Cannot write {output}: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ZooError(f"Cannot write {output}: {reason}. Give -o a writable file path such as losses.png.") from None
    plain_echo(f"Wrote {output} ({len(views)} run{'s' if len(views) != 1 else ''}"
          f"{', log y axis' if log_y else ''}).")


CURVES = {LOSS: LOSS_KEYS, ACCURACY: (TRAIN_ACC, VAL_ACC)}  # plot --metric -> history keys


def _plot_path(output: Path) -> Path:
    """The file plot writes: ``output``, with .png added when it has no extension (as matplotlib would)."""
    if output.is_dir():
        raise ZooError(f"{output} is a directory: give -o a file path such as {output / 'losses.png'}.")
    if not output.suffix:
        output = output.with_name(output.name + ".png")
        if output.is_dir():
            raise ZooError(f"{output} is a directory: give -o a file path such as {output / 'losses.png'}.")
    return output


@app.command("delete")
def delete(
    runs: Optional[List[str]] = typer.Argument(None, help="Runs to delete (ids or uuid prefixes)."),
    where: Optional[str] = where_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Move runs to the trash, with their artifacts (zoo restore brings them back, zoo gc deletes them for good)."""
    from zoo import render
    from zoo.store import queries, trash

    if not runs and not where:
        raise ZooError("Name the runs to delete (zoo delete 3 5) or give a filter (zoo delete --where \"status = "
                       "failed\").")
    with open_registry(readonly=False, create=False) as reg:
        with reg.connect() as conn:
            ids = list(dict.fromkeys(reg.resolve(ref, conn) for ref in runs or ()))
            if where:
                found, _ = queries.list_runs(conn, run_filter(where=where, ids=ids or None), limit=None, host=reg.host)
                ids = sorted(v.id for v in found)
            views = queries.run_views(conn, ids, host=reg.host)
        if not views:
            typer.echo("No runs match this filter: nothing deleted.")
            return
        live = [v for v in views if v.display_status == "running"]
        if live:
            listing = ", ".join(f"{v.id} (pid {v.pid} on {v.host})" for v in live)
            raise ZooError(f"Run {listing} is still running: stop it first. Nothing deleted.")
        for v in views:
            plain_echo(f"  run {v.id}  {v.model}  {v.display_status}  {render.fmt_time(v.started)}"
                       + (f"  checkpoint {v.checkpoint}" if v.checkpoint else ""))
        count = f"{len(views)} run{'s' if len(views) != 1 else ''}"
        if not yes and not typer.confirm(f"Delete {count} and {'its' if len(views) == 1 else 'their'} artifacts?", default=False):
            typer.echo("Nothing deleted.")
            return
        moved = trash.trash_runs(reg, [v.id for v in views])
    folders = len(moved.folders)
    typer.echo(f"Deleted {count}" + (f" and {folders} artifact folder{'s' if folders != 1 else ''}" if folders else "")
               + f": in the trash until `zoo gc` (`zoo restore {' '.join(str(i) for i in moved.runs[:3])}"
               + ("..." if len(moved.runs) > 3 else "") + f"` brings {'it' if len(moved.runs) == 1 else 'them'} back).")


@app.command("restore")
def restore(runs: List[str] = typer.Argument(..., help="Deleted runs to bring back (ids or uuid prefixes).")) -> None:
    """Bring deleted runs back from the trash, with their artifacts."""
    from zoo.store import trash

    with open_registry(readonly=False, create=False) as reg:
        with reg.connect() as conn:
            ids = list(dict.fromkeys(reg.resolve(ref, conn, deleted=True) for ref in runs))
            in_trash = trash.trashed_ids(conn, ids)
        missing = [i for i in ids if i not in in_trash]
        if missing:
            raise ZooError(f"Run {', '.join(map(str, missing))} is not in the trash: `zoo list-runs --deleted` lists "
                           "the deleted runs. Nothing restored.")
        moved = trash.restore_runs(reg, ids)
    typer.echo(f"Restored {len(moved.runs)} run{'s' if len(moved.runs) != 1 else ''}"
               + (f" and {len(moved.folders)} artifact folder{'s' if len(moved.folders) != 1 else ''}."
                  if moved.folders else "."))


@app.command("gc")
def gc(
    older_than: Optional[str] = typer.Option(None, "--older-than", metavar="AGE",
                                             help="Only runs deleted longer ago than this (30d, 12h, 2w)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Empty the trash: delete runs deleted with `zoo delete` for good, rows and artifacts."""
    from zoo.store import queries, trash

    if older_than and not re.fullmatch(r"\s*\d+(\.\d+)?\s*[smhdw]\s*", older_than.lower()):
        raise ZooError(f"Bad --older-than '{older_than}': give an age such as 30d, 12h or 2w.")
    cutoff = parse_since(older_than) if older_than else None
    with open_registry(readonly=False, create=False) as reg:
        with reg.connect() as conn:
            flt = queries.RunFilter(deleted=True)
            views, _ = queries.list_runs(conn, flt, limit=None, host=reg.host)
            when = trash.trashed_ids(conn, [v.id for v in views])
        ids = [v.id for v in views if cutoff is None or when[v.id] < cutoff]
        if not ids:
            typer.echo("The trash is empty." if not views else f"No run in the trash was deleted more than "
                       f"{older_than} ago ({len(views)} in the trash).")
            return
        count = f"{len(ids)} run{'s' if len(ids) != 1 else ''}"
        if not yes and not typer.confirm(f"Delete {count} from the trash for good?", default=False):
            typer.echo("Nothing deleted.")
            return
        purged, done = trash.purge(reg, older_than=cutoff)
    typer.echo(f"Deleted {len(purged)} run{'s' if len(purged) != 1 else ''} for good"
               + (f" and {_artifacts(done.removed, purged)}." if done.removed else "."))
    if done.kept:
        from zoo.errors import print_warning

        print_warning(f"Left in place, not zoo's own files in the artifacts folder: "
                      f"{', '.join(repr(str(path)) for path in done.kept)}.")


def _artifacts(removed: list[Path], ids: list[int]) -> str:
    """'1 artifact folder', '2 artifact folders and 1 checkpoint file': each thing removed counted once."""
    names = {f"run-{i}" for i in ids}
    folders = sum(1 for path in removed if path.name in names)
    files = len(removed) - folders
    parts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((folders, "artifact folder"),
                                                                  (files, "artifact file")) if n]
    return " and ".join(parts)


@app.command("migrate")
def migrate() -> None:
    """Upgrade the registry's schema in place to this zoo's version (writing commands also do it)."""
    from zoo.cli.app import registry_location
    from zoo.store import Registry, migrations

    # integrity first: a damaged file is never migrated, nor reported as upgraded
    with Registry.open(registry_location(), create=False, check_integrity=True) as reg:
        typer.echo(f"Registry {reg.location} is at schema version {reg.schema_version()} "
                   f"(this zoo: {migrations.latest_version()}).")
