"""``zoo train MODEL... [--lr 0.1,0.01 ...]``: options -> RunSpecs -> the training service -> the final table.

Each option's type, default, limits and help live in ``zoo.spec.RunSpec``: the options of its fields are made from
that metadata (``zoo.cli.options``, shared with ``zoo tune``), and this module only adds the command's own.
Options marked "grid" take comma lists or repeat (``--lr 0.1,0.01 --seed 1,2``): their product is trained, every
run in one group. ``--grid FILE`` reads a TOML grid. The lifecycle of each run (recorded whatever stops it) lives in
``zoo.training.session``; Ctrl-C exits 130, SIGTERM 143, a failed run 1 once the others have run.

``--from RUN`` replays the options as the user gave them: params hold ``device``/``precision`` as typed ('auto' by
default) beside ``resolved_device``/``resolved_precision``, so a GPU run replays on a CPU machine.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, List, Optional

import typer

from zoo import spec as specs
from zoo.cli import options
from zoo.cli.app import app, open_registry, parse_tags
from zoo.errors import ZooError, print_error, print_warning


def train(
    models: Optional[List[str]] = typer.Argument(None, metavar="MODEL...", show_default=False,
                                                 help="Architectures to train, in turn, on one shared split."),
    seeds: Optional[int] = typer.Option(None, "--seeds", metavar="N", show_default=False,
                                        help="Train each run N times, with seeds --seed, --seed+1, ... (one shared "
                                             "split): `zoo compare --by model` then shows mean and interval."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", metavar="[MODEL=]FILE", show_default=False,
                                                help="Start from a local state_dict or zoo checkpoint (mismatched "
                                                     "classifier tensors are skipped): FILE for every model, or "
                                                     "MODEL=FILE per model (repeat)."),
    loss: Optional[List[str]] = typer.Option(None, "--loss", metavar="NAME[,NAME...]", show_default=False,
                                             help="Training loss: a registered one (default cross_entropy, with the "
                                                  "recipe's label smoothing). Grid: comma list or repeat."),
    callback: List[str] = typer.Option([], "--callback", metavar="NAME",
                                       help="Turn on a callback a plugin registers (a logger...); repeatable."),
    opt: List[str] = typer.Option([], "--opt", metavar="KEY=VALUE[,VALUE...]",
                                  help="An option the chosen optimizer, schedule, loss or callbacks declare (an unknown "
                                       "KEY lists them); recorded as param opt.KEY. Repeatable; a comma list is a grid."),
    grid: Optional[Path] = typer.Option(None, "--grid", metavar="FILE.toml", show_default=False,
                                        help="Runs from a TOML file: \\[base] + \\[grid] lists (a product), or \\[\\[runs]]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the options and print the plan; train nothing."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed run (default: go on)."),
    queue: bool = typer.Option(False, "--queue", help="Record the runs as queued and exit; `zoo worker` trains "
                                                      "them, on any machine that sees the registry."),
    group: Optional[str] = typer.Option(None, "--group", show_default=False,
                                        help="Group id recorded on every run (default: a new short id)."),
    name: Optional[str] = typer.Option(None, "--name", help="A name for the run(s)."),
    tag: List[str] = typer.Option([], "--tag", metavar="KEY=VALUE", help="Tag the run(s); repeatable."),
    from_run: Optional[str] = typer.Option(None, "--from", metavar="RUN",
                                           help="Reuse an earlier run's params, model, name and tags; options "
                                                "given here win."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN", show_default=False,
                                         help="Go on with an interrupted or stale run, in its own row, from its "
                                              "last finished epoch."),
    max_runs: Optional[int] = typer.Option(None, "--max-runs", min=1, metavar="N", show_default=False,
                                           help=f"Allow a grid of up to N runs (default: {specs.MAX_RUNS:,}; "
                                                f"more is refused before anything is decoded or queued)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings, errors and the final table."),
    **spec_options: Any,
) -> None:
    """Train one or more models on one shared, stratified split and record every run in the registry."""
    lists = {key: spec_options.pop(key) for key in SPEC_OPTIONS if options.takes_list(key)}  # in grid-axis order
    axes = {key: specs.parse_list(key, texts) for key, texts in lists.items() if texts}
    if seeds is not None:
        axes["seed"] = specs.seed_series(axes.get("seed"), seeds)
    if loss:
        axes["loss"] = list(dict.fromkeys(n.strip().lower() for t in loss for n in t.split(",") if n.strip()))
    if callback:
        axes[specs.CALLBACKS_PARAM] = [tuple(dict.fromkeys(c.strip() for c in callback if c.strip()))]
    axes.update(specs.parse_opts(opt))
    if resume is not None:
        if models or from_run or grid or axes or spec_options.get("data") or weights or queue or dry_run or max_runs:
            raise ZooError("--resume RUN goes on with the run's own options: give no models, --data or training "
                           "options with it.")
        return _train([], group=None, dry_run=False, fail_fast=False, quiet=quiet, resume=resume)
    every_model, per_model = parse_weights(weights or [], models or [])
    singles = {**spec_options, "weights": every_model}  # the options of one value: data, the flags, workers...
    axes.update({key: [specs.convert(key, value) if key != "data" else value]
                 for key, value in singles.items() if value is not None})
    from zoo.cli.app import config

    settings = config()
    defaults = specs.config_defaults(settings.train, settings.sources)  # zoo.toml [train]
    base: dict[str, Any] = {}
    source_model = parent = None
    tags = specs.check_tags(parse_tags(tag))
    if models and len(set(models)) < len(models):
        print_warning("A model is named twice: each model is trained once per set of options.")
    if from_run is not None:
        with open_registry(readonly=True, create=False) as reg:
            source = reg.get_run(from_run)
        base = specs.replay_values(source.params, same_model=True)
        source_model, parent = source.model, source.id
        models = models or [source.model]
        name = name if name is not None else source.name
        if not tag:
            tags = tuple((k, v) for k, v in source.tags.items() if not k.startswith(specs.SYSTEM_TAG_PREFIX))
        if "data" not in base and "data" not in axes and "data" not in defaults:
            raise ZooError(f"Run {source.id} recorded no --data; pass --data PATH|NAME.")
    run_specs = specs.build_specs(models=list(models or []), axes=axes,
                                  rows=specs.parse_grid(grid) if grid else None, base=base,
                                  source_model=source_model, name=name, tags=tags, parent=parent, defaults=defaults,
                                  max_runs=max_runs)
    if per_model:
        run_specs = [specs.replace(s, weights=per_model.get(s.model, s.weights)) for s in run_specs]
    if queue and not dry_run:
        from zoo.cli.worker import queue_specs
        from zoo.distributed import from_env

        if from_env().launched:  # every rank would queue the runs again
            raise ZooError("--queue only records runs for `zoo worker`: run it without torchrun.")
        return queue_specs(run_specs, group=group)
    _train(run_specs, group=group, dry_run=dry_run, fail_fast=fail_fast, quiet=quiet)


# The RunSpec fields that are options, in command-line order (also the order of a grid's axes).
SPEC_OPTIONS = options.command_order(specs.ALL_OPTIONS)


def _parameters() -> list[inspect.Parameter]:
    """The command's options: MODEL..., one per RunSpec option made from the field's metadata (zoo.cli.options)
    with --seeds after --seed and the command's own --weights, then the command's own (--loss ... --quiet)."""
    own = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    named = {p.name: p if p.name == "models" else p.replace(kind=options.KEYWORD) for p in own}
    generated = options.spec_parameters(options.train_option, SPEC_OPTIONS, custom={"weights": named["weights"]},
                                        after={"seed": [named["seeds"]]})
    return [named["models"], *generated, *(named[p.name] for p in own if p.name not in ("models", "weights", "seeds"))]


app.command(no_args_is_help=True)(options.with_parameters(train, _parameters()))


def parse_weights(texts: List[str], models: List[str]) -> tuple[Optional[str], dict[str, str]]:
    """``--weights FILE`` (every model) and ``--weights MODEL=FILE`` (one model each, repeatable). A value is
    MODEL=FILE when the text before its first '=' names a model of the command and is not an existing file."""
    every, per_model = None, {}
    for text in texts:
        model, sep, path = text.partition("=")
        if sep and model in models and not Path(text).exists():
            if model in per_model:
                raise ZooError(f"--weights {text}: {model} already has --weights {model}={per_model[model]}; "
                               "give one file per model.")
            if not path:
                raise ZooError(f"--weights {text}: give a file after '='.")
            per_model[model] = path
        elif every is not None:
            raise ZooError(f"--weights {text}: only one --weights FILE for every model; give one file per model "
                           f"as --weights MODEL=FILE ({', '.join(models) or 'the models of the command'}).")
        else:
            every = text
    return every, per_model


def _train(run_specs: list, *, group: Optional[str], dry_run: bool, fail_fast: bool, quiet: bool,
           resume: Optional[str] = None) -> None:
    from zoo import distributed
    from zoo.cli.progress import Display, plan_table, summary_table
    from zoo.training import Session, make_plan
    from zoo.training.plan import check_artifacts

    world = distributed.from_env()  # under torchrun: rank 0 records and prints, the other ranks follow
    if resume is not None and world.size > 1:
        raise ZooError("--resume is not supported under torchrun yet; resume the run in one process.")
    if not world.is_main:
        return _follow(run_specs, world, dry_run=dry_run, fail_fast=fail_fast)
    display = Display(quiet)
    if dry_run:
        from zoo.cli.progress import dry_run_report
        from zoo.training.plan import dry_run as check_all

        checked = check_all(run_specs, group=group)
        for line in dry_run_report(checked):
            display.out.print(line)
        missing = [w for w in checked.weights if not w.present]
        if missing:
            print_warning(f"{len(missing)} pretrained weights file(s) not in the cache (listed above): zoo train "
                          "downloads them when online; offline, copy each from its URL to its path.")
        if checked.problems:
            raise ZooError(f"The dry run found {len(checked.problems)} problem(s): " + "; ".join(checked.problems))
        return
    if len(set(run_specs)) < len(run_specs):
        print_warning("Some runs of this command have identical options: each is trained (same seed, same result).")
    with distributed.process_group(world):
        # every check that can fail runs before the registry is opened: a refused command creates nothing
        plan = make_plan(run_specs, None, group=group) if resume is None else None
        with open_registry() as reg:
            point = None
            if resume is not None:
                from zoo.training.resume import resume_point

                spec, point = resume_point(reg, resume)
                run_specs = [spec]
                display.line(f"Resuming run {point.run_id} after epoch {point.state['epoch']}.")
                plan = make_plan(run_specs, reg, group=group)
            else:
                check_artifacts(reg)
            if len(plan.runs) > 1:
                display.line(plan_table([r.spec for r in plan.runs], plan.varied, plan.group))
            result = Session(plan, reg, display, fail_fast=fail_fast, world=world, resume=point).run()
    display.stop()
    if result.outcomes:
        display.out.print(summary_table(result.outcomes, plan.varied))
    if result.stopped_by:
        last = result.outcomes[-1] if result.outcomes else None
        if last is None:
            print_error("Terminated (SIGTERM)." if result.stopped_by == "SIGTERM" else "Interrupted.")
        else:
            word = "Terminated" if result.stopped_by == "SIGTERM" else "Interrupted"
            print_warning(f"{word}: run {last.run_id} ({last.model}) recorded as interrupted after "
                          f"{last.epochs_run} epoch(s)." + (f" {result.skipped} planned run(s) not started."
                                                            if result.skipped else ""))
        raise typer.Exit(result.exit_code)
    if result.failed:
        why = "--fail-fast" if fail_fast else "under torchrun a crash on any rank ends the command"
        skipped = f" ({result.skipped} run(s) not started: {why})" if result.skipped else ""
        raise ZooError(f"{len(result.failed)} of {len(result.outcomes)} run(s) failed{skipped}: "
                       + "; ".join(f"run {o.run_id} ({o.model}): {o.error}" for o in result.failed))


def _follow(run_specs: list, world, *, dry_run: bool, fail_fast: bool) -> None:
    """A torchrun rank other than 0: the same checks, plan and session as rank 0, recording and printing nothing
    but its own crash (which rank 0 records in the run)."""
    from zoo import distributed
    from zoo.training import Session, make_plan
    from zoo.vocab import StopReason

    if dry_run:
        return
    with distributed.process_group(world):
        plan = make_plan(run_specs, None)
        result = Session(plan, distributed.NullRegistry(), fail_fast=fail_fast, world=world).run()
    crashed = [o.error for o in result.failed if o.stop_reason == StopReason.ERROR]
    if crashed:
        print_error(f"rank {world.rank}: {'; '.join(map(str, crashed))}")
    if result.stopped_by or result.failed:
        raise typer.Exit(result.exit_code)
