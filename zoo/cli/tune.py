"""``zoo tune MODEL --data D --trials N [--lr 1e-4..1e-1 --batch-size 16,32 ...]`` and ``zoo tune show STUDY``.

The search options are generated from ``zoo.spec.RunSpec``: every option a grid may vary takes one value (fixed),
a comma list (categorical) or, for numbers, a range LOW..HIGH (log scale where the spec says so). The search
itself lives in ``zoo.tune``; this module reads the command line and renders.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from zoo import spec as specs
from zoo.cli import options
from zoo.cli.app import app, check_choice, open_registry, tidy_help
from zoo.cli.runs import plain_echo, read_command
from zoo.errors import ZooError, console, print_warning
from zoo.render import STATUS_STYLES, fmt_num, to_csv, to_json


class TuneGroup(TyperGroup):
    """``zoo tune MODEL ...`` runs a search (the ``run`` sub-command) unless the first word is a sub-command
    (``show``)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_help(command, ctx)
        return command


tune_app = typer.Typer(cls=TuneGroup, no_args_is_help=True,
                       help="Search hyper-parameters with Optuna: every trial an ordinary run. `zoo tune MODEL "
                            "--data D --trials N --lr 1e-4..1e-1 ...` (see `zoo tune run --help`), `zoo tune show "
                            "STUDY`.")
app.add_typer(tune_app, name="tune")


# ----------------------------------------------------------------------------------------- zoo tune run


def _parameters() -> list[inspect.Parameter]:
    """The command's options: the search's own, then one per option a grid may vary, then the fixed-only ones;
    those of RunSpec's fields made from the fields' metadata like `zoo train`'s (zoo.cli.options)."""
    P, K = inspect.Parameter, inspect.Parameter.KEYWORD_ONLY
    own = [
        P("model", P.POSITIONAL_OR_KEYWORD, annotation=str,
          default=typer.Argument(..., metavar="MODEL", show_default=False, help="The architecture to tune.")),
        options.single_option("data"),
        P("trials", K, annotation=int, default=typer.Option(
            10, "--trials", "-n", min=1, help="Finished trials to reach (a re-run goes on up to N); a worker "
                                              "joining a study that others are running adds N.")),
        P("timeout", K, annotation=Optional[float], default=typer.Option(
            None, "--timeout", metavar="SECONDS", min=0, show_default=False,
            help="Start no new trial after this long.")),
        P("sampler", K, annotation=str, default=typer.Option(
            "tpe", "--sampler", help="Optuna sampler: tpe, random, cmaes or grid (lists only).")),
        P("pruner", K, annotation=str, default=typer.Option(
            "median", "--pruner", help="Stop hopeless trials early: median, halving, hyperband or none.")),
        P("metric", K, annotation=str, default=typer.Option(
            "val_loss", "--metric", help="The objective, on the validation split: val_loss or val_accuracy.")),
        P("study", K, annotation=Optional[str], default=typer.Option(
            None, "--study", metavar="NAME", show_default=False,
            help="Study name, shared by every worker (default: the model and a digest of the options, so the "
                 "same command goes on with the same study).")),
        P("sampler_seed", K, annotation=Optional[int], default=typer.Option(
            None, "--sampler-seed", show_default=False,
            help="Seed of the sampler (give each worker its own, or none).")),
        P("heartbeat", K, annotation=int, default=typer.Option(
            30, "--heartbeat", metavar="SECONDS", min=1,
            help="A worker's trial is failed (and retried once) when silent for twice this long.")),
    ]
    search = options.spec_parameters(options.search_option, specs.GRID_OPTIONS)
    fixed = [
        P("weights", K, annotation=Optional[Path], default=typer.Option(
            None, "--weights", metavar="FILE", show_default=False,
            help="Start every trial from a local state_dict or zoo checkpoint.")),
        options.single_option("workers"),
        options.flag_option("strict"),
        P("quiet", K, annotation=bool, default=typer.Option(
            False, "--quiet", "-q", help="Only warnings, errors and the best trial.")),
    ]
    return own + search + fixed


def tune_run(model: str, **options: Any) -> None:
    """Search hyper-parameters: each trial trains MODEL as an ordinary run in the study's group."""
    from zoo.tune import METRICS, PRUNERS, SAMPLERS, Settings, default_study_name, parse_space

    sampler = check_choice("--sampler", options.pop("sampler"), SAMPLERS)
    pruner = check_choice("--pruner", options.pop("pruner"), PRUNERS)
    metric = check_choice("--metric", options.pop("metric"), tuple(METRICS))
    data = options.pop("data")
    if data is None:
        raise ZooError("--data is required: an image folder with one sub-folder per class, or a dataset name.")
    space = parse_space({name: options.pop(name) for name in specs.GRID_OPTIONS if options.get(name)})
    singles = dict(weights=str(options["weights"]) if options["weights"] else None, workers=options["workers"],
                   strict=options["strict"])
    space.fixed.update({"data": data}, **{k: specs.convert(k, v) for k, v in singles.items() if v is not None})
    if not space.dims:
        raise ZooError("Nothing to search: give at least one option a range (--lr 1e-4..1e-1) or a list "
                       "(--batch-size 16,32).")
    settings = Settings(model=model, study=options["study"] or default_study_name(model, space, metric), space=space,
                        metric=metric, sampler=sampler, pruner=pruner, trials=options["trials"],
                        timeout=options["timeout"], sampler_seed=options["sampler_seed"],
                        heartbeat=options["heartbeat"])
    _tune(settings, quiet=options["quiet"])


tune_run.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
tune_run.__annotations__ = {p.name: p.annotation for p in tune_run.__signature__.parameters.values()}
tune_app.command("run", no_args_is_help=True)(tune_run)


def _tune(settings, *, quiet: bool) -> None:
    from zoo import distributed
    from zoo.training import EXIT_CTRL_C, EXIT_SIGTERM
    from zoo.tune import Stopped, Tuner, best_value, open_study, train_command

    optuna = _optuna()
    if distributed.from_env().launched:
        raise ZooError("zoo tune runs its trials one process each: start several `zoo tune --study NAME` workers "
                       "instead of torchrun.")
    from zoo.cli.progress import TuneDisplay

    display = TuneDisplay(quiet)
    with open_registry() as reg:
        base = {"model": settings.model, **settings.space.fixed}
        tuner = Tuner(reg, settings, base, display)
        tuner.check()  # every corner of the space is a valid run, the data is there: before any trial
        epochs = specs.RunSpec(**base).with_recipe().epochs if "epochs" not in settings.space.dims else None
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # zoo prints each trial itself
        study = open_study(reg, settings, epochs)
        display.line(f"Study {settings.study} ({settings.metric}, {settings.sampler}, pruner {settings.pruner}) in "
                     f"{reg.location}: " + ", ".join(f"{k} {v}" for k, v in settings.space.describe().items()))
        try:
            ended = tuner.run(study)
        except Stopped as stop:
            display.stop()
            print_warning(f"{'Terminated' if stop.by == 'SIGTERM' else 'Interrupted'}: the trial in progress is "
                          f"recorded as interrupted (failed in the study); run the same command to go on.")
            raise typer.Exit(EXIT_SIGTERM if stop.by == "SIGTERM" else EXIT_CTRL_C)
        display.stop()
        if not ended:
            display.out.print(f"Study {settings.study} already has {settings.trials} finished trial(s); raise "
                              f"--trials to go on.")
        best = best_value(study)
        if best is not None:
            trial = study.best_trial
            display.out.print(Text.assemble(("Best", "bold green"), f": trial {trial.number}, run "
                                            f"{trial.user_attrs.get('zoo.run')}, {settings.metric} {fmt_num(best)} "
                                            + " ".join(f"{k} {specs.option_text(v)}"
                                                       for k, v in trial.params.items())))
            display.out.print(Text("Reproduce: " + train_command(settings.model, settings.attrs()["zoo.fixed"],
                                                                 trial.params)))
        if ended and all(e.state == "failed" for e in ended):
            raise ZooError(f"Every trial of this worker failed: {ended[-1].error}")


def _optuna():
    from zoo.tune import optuna_or_error

    return optuna_or_error("zoo tune")


# ---------------------------------------------------------------------------------------- zoo tune show


@tune_app.command("show", no_args_is_help=True)
@read_command
def show(
    study: str = typer.Argument(..., metavar="STUDY", help="The study's name (`zoo tune` prints it)."),
    fmt: str = typer.Option("table", "--format", "-f", help="Output format: table, json, csv."),
    plots: Optional[Path] = typer.Option(None, "--plots", metavar="DIR", show_default=False,
                                         help="Also write the optimisation history and a parallel-coordinates "
                                              "plot as PNG files here (needs matplotlib)."),
) -> None:
    """A study's trials, its best trial with the `zoo train` command that reproduces it, parameter importances."""
    from dataclasses import asdict

    from zoo.tune import load_study, read_study, save_plots

    fmt = check_choice("--format", fmt, ("table", "json", "csv"))
    _optuna()
    with open_registry(readonly=True, create=False) as reg:
        report = read_study(reg, study)
        written = []
        if plots is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ZooError("--plots needs matplotlib: pip install 'zoo-vision[plot]'.") from None
            if not [t for t in report.trials if t["state"] == "complete"]:
                raise ZooError(f"Study {study} has no complete trial to plot yet.")
            written = save_plots(load_study(reg, study), Path(plots).expanduser())
    if fmt == "json":
        plain_echo(to_json(asdict(report)))
        return
    params = report.params
    if fmt == "csv":
        columns = ["trial", "state", "value", "run", "run_status", "epochs", "retry_of", "seconds", *params]
        plain_echo(to_csv(columns, [[t[c] for c in columns[:8]] + [t["params"].get(p) for p in params]
                               for t in report.trials]))
        return
    out = console(soft_wrap=False)
    out.print(trials_table(report))
    if report.best is not None:
        out.print(Text.assemble(("Best", "bold green"), f": trial {report.best['trial']}, run {report.best['run']}, "
                                f"{report.metric} {fmt_num(report.best['value'])}"))
        out.print(Text(f"Reproduce: {report.best['command']}"))
    if report.importances:
        out.print(Text("Importance: " + ", ".join(f"{k} {v:.2f}" for k, v in report.importances.items())))
    else:
        out.print(Text(f"Importance: {report.importance_note}"))
    for path in written:
        out.print(Text(f"Plot: {path}"))


def trials_table(report) -> Table:
    """A study's trials, one row each, in trial order (``StudyReport.rows``, as the report and the ui show them)."""
    table = Table(title=f"Study {report.name}: {report.model}, {report.direction} {report.metric}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, right in (("Trial", True), ("State", False), (report.metric, True), ("Run", True),
                          ("Run status", False), ("Epochs", True), *((p, True) for p in report.params),
                          ("Time", True)):
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for row in report.rows():
        state = Text(row.shown_state, style={"complete": "green", "pruned": "dim", "fail": "bold red",
                                             "running": "cyan"}.get(row.state, ""))
        run_status = Text(row.run_status, style=STATUS_STYLES.get(row.run_status, ""))
        table.add_row(str(row.trial), state, row.value, "—" if row.run is None else str(row.run), run_status,
                      str(row.epochs), *row.params, row.time)
    return table
