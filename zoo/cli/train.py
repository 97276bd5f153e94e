"""``zoo train MODEL [MODEL...]``: every model on one shared split, every run recorded in the registry.

The command checks everything first (models, sizes, device, the registry and its artifacts folder, the data
folder, every model built), decodes the images once, then for each model starts a run, lets the engine train it,
and records what the engine reports through ``Recorder`` (engine callbacks -> Registry calls). torch is imported
only once the command runs.

How a run ends when the command is stopped: zoo never leaves a run 'running'. Ctrl-C and SIGTERM record the run in
progress as 'interrupted' (stop_reason 'interrupted') and exit 130 (Ctrl-C) or 143 (SIGTERM, 128 + 15). Any other
stop from outside the training (SystemExit, e.g. rich exiting when stdout is a closed pipe as in
``zoo train ... | head -1``) is also recorded 'interrupted', with the cause in the run's error, and the exit goes on
unchanged. An exception in the training itself records the run 'failed' (stop_reason 'error').

``--from RUN`` replays the options as the user gave them: params hold ``device``/``precision`` as typed ('auto' by
default) and the values they resolved to under ``resolved_device``/``resolved_precision`` (the run's device column
holds the resolved device too), so a GPU run replays on a CPU machine. Runs recorded before that split stored only
the resolved values; --from does not replay device and precision from them.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Optional

import typer

from zoo.cli.app import app, open_registry, parse_tags
from zoo.errors import ZooError, console, print_warning

DEFAULT_EPOCHS = 30  # a maximum: early stopping (patience 7) usually ends runs sooner
DEFAULT_BATCH_SIZE = 32

# Options that --from RUN copies from the earlier run's params unless given on the command line.
REPRODUCED = ("data", "epochs", "batch_size", "lr", "momentum", "weight_decay", "patience", "min_delta", "split",
              "image_size", "seed", "pretrained", "weights", "device", "workers", "precision", "compile", "strict")
# Recorded beside them: what "auto" became on the machine that trained. Never replayed.
RESOLVED = ("resolved_device", "resolved_precision")

EXIT_CTRL_C = 130
EXIT_SIGTERM = 143  # 128 + SIGTERM, what shells report for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``zoo train``: handled exactly like Ctrl-C, but exits 143."""


# --------------------------------------------------------------------------------------------- rendering


def epoch_line(model: str, epoch: int, epochs: int, values: dict[str, float], improved: bool):
    """One finished epoch as rich Text (plain text, plus a green "best" when validation loss improved)."""
    from rich.text import Text

    from zoo.render import fmt_num

    line = Text(f"{model} epoch {epoch:>{len(str(epochs))}}/{epochs}  train loss {fmt_num(values['train_loss'])} "
                f"acc {fmt_num(values['train_acc'], 3)}  val loss {fmt_num(values['val_loss'])} "
                f"acc {fmt_num(values['val_acc'], 3)}  {values['images_per_sec']:.0f} img/s  "
                f"{values['seconds']:.1f}s")
    if improved:
        line.append("  ").append("best", style="green")
    return line


def summary_table(rows: list[dict[str, Any]]):
    """The models trained by one command, best test accuracy first (runs without one last)."""
    from rich import box
    from rich.table import Table

    from zoo.render import fmt_duration, fmt_num

    table = Table(title="Trained in this command", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, right in (("Run", True), ("Model", False), ("Result", False), ("Best", True), ("Epochs", True),
                          ("Test acc", True), ("F1", True), ("Loss", True), ("Time", True)):
        table.add_column(header, justify="right" if right else "left", no_wrap=not header == "Model")
    ordered = sorted(rows, key=lambda r: (r.get("test_accuracy") is None, -(r.get("test_accuracy") or 0.0)))
    for r in ordered:
        result = r.get("stop_reason") or r["status"]
        if r["status"] not in ("completed", result):
            result = f"{r['status']}: {result}"
        table.add_row(str(r["run"]), r["model"], result, str(r.get("best_epoch") or "—"),
                      str(r.get("epochs_run") or 0), fmt_num(r.get("test_accuracy")), fmt_num(r.get("test_f1")),
                      fmt_num(r.get("test_loss")), fmt_duration(r.get("seconds")))
    return table


class Display:
    """Progress bar (stderr, terminals only) and one line per finished epoch (stdout), both off with --quiet.
    Paths, names and messages are user text: the consoles show them as given (no markup); colour comes from Text."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.out = console()
        self.err = console(stderr=True)
        self.progress = None
        self.task = None

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
                                     TimeRemainingColumn(),
                                     console=self.err, transient=True)
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total, info="")

    def update(self, completed: int, info: str = "") -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed, info=info)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None


# ----------------------------------------------------------------------------------------------- recorder


def _callback_classes():
    """(Messages, Recorder): engine callbacks for the CLI, defined once torch-side code is imported."""
    from zoo.engine import Callbacks

    class Messages(Callbacks):
        """Engine messages as lines of the display; warnings (skipped tensors...) on stderr."""

        def __init__(self, display: Display):
            self.display = display

        def on_message(self, text: str) -> None:
            self.display.line(text)

        def on_warning(self, text: str) -> None:
            print_warning(text)

    class Recorder(Messages):
        """Engine callbacks -> registry lifecycle calls, plus the progress display."""

        def __init__(self, reg, run_id: Optional[int], model: str, epochs: int, display: Display):
            super().__init__(display)
            self.reg, self.run_id, self.model, self.epochs = reg, run_id, model, epochs
            self.epochs_run, self.best_epoch, self.checkpoint = 0, None, None
            self.finished = False  # finish_run called: the run has its final status
            self.metrics: dict[str, float] = {}

        def on_epoch_start(self, epoch: int, batches: int) -> None:
            self.display.start(f"{self.model} epoch {epoch}/{self.epochs}", batches)

        def on_batch(self, epoch, batch, batches, running_loss, images_per_sec) -> None:
            self.display.update(batch, f"loss {running_loss:.4f}  {images_per_sec:.0f} img/s")

        def on_epoch_end(self, epoch: int, values: dict[str, float], improved: bool) -> None:
            self.reg.log_epoch(self.run_id, epoch, values)
            self.epochs_run = epoch
            self.display.stop()
            self.display.line(epoch_line(self.model, epoch, self.epochs, values, improved))

        def on_checkpoint(self, path: str, epoch: int) -> None:
            self.checkpoint, self.best_epoch = path, epoch
            self.reg.update_run(self.run_id, checkpoint=path, best_epoch=epoch)

        def on_test(self, metrics: dict[str, float], confusion: list[list[int]]) -> None:
            self.metrics = metrics
            self.reg.log_metrics(self.run_id, metrics, confusion=confusion)

        def finish(self, result) -> None:
            self.reg.finish_run(self.run_id, result.status, stop_reason=result.stop_reason,
                                best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                                checkpoint=result.checkpoint, error=result.error)
            self.finished = True

        def stopped(self, status: str, stop_reason: str, error: Optional[str] = None) -> None:
            self.display.stop()
            self.reg.finish_run(self.run_id, status, stop_reason=stop_reason, best_epoch=self.best_epoch,
                                epochs_run=self.epochs_run, checkpoint=self.checkpoint, error=error)
            self.finished = True

    return Messages, Recorder


# ---------------------------------------------------------------------------------------------- options


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether an option was given on the command line (or its environment variable), not defaulted.
    Compared by name: Typer may carry its own copy of click's ParameterSource enum."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")


def _apply_from(ctx: typer.Context, ref: str, models: list[str], opts: dict[str, Any]) -> list[str]:
    """Fill every option not given on the command line from run ``ref``'s params; its model by default."""
    with open_registry(readonly=True, create=False) as reg:
        source = reg.get_run(ref)
    if not models:
        models = [source.model]
    same_model = models == [source.model]
    # Runs recorded before the resolved values had keys of their own stored the resolved device and precision
    # (cuda:0, bf16) under device/precision: those are not replayed, so the machine here picks its own.
    resolved_only = not any(key in source.params for key in RESOLVED)
    for key in REPRODUCED:
        if key in source.params and not _given(ctx, key):
            if key == "image_size" and not same_model:
                continue  # another architecture: its own default size
            if key in ("device", "precision") and resolved_only:
                continue
            opts[key] = source.params[key]
    if opts.get("data") is None:
        raise ZooError(f"Run {source.id} recorded no --data; pass --data PATH|NAME.")
    return models


# ------------------------------------------------------------------------------------------------ command


@app.command(no_args_is_help=True)
def train(
    ctx: typer.Context,
    models: Optional[List[str]] = typer.Argument(None, metavar="MODEL...", show_default=False,
                                                 help="Architectures to train, in turn, on one shared split."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="PATH|NAME", show_default=False,
                                       help="Image folder (one sub-folder per class) or dataset name (demo, pets)."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", min=1, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1),
    lr: float = typer.Option(0.001, "--lr", min=0.0, help="SGD learning rate."),
    momentum: float = typer.Option(0.9, "--momentum", min=0.0),
    weight_decay: float = typer.Option(0.0, "--weight-decay", min=0.0),
    patience: int = typer.Option(7, "--patience", min=0, help="Epochs without a better validation loss before stopping."),
    min_delta: float = typer.Option(0.0, "--min-delta", min=0.0, help="Smallest decrease of validation loss that counts."),
    split: str = typer.Option("8:1:1", "--split", help="train:val:test ratios, stratified by class."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, show_default=False,
                                             help="Square input size in px (default: each model's own)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the split, the initial weights and the augmentation."),
    pretrained: bool = typer.Option(False, "--pretrained/--no-pretrained", help="Start from the plugin's weights."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="FILE", show_default=False,
                                           help="Start from a local state_dict or zoo checkpoint (mismatched "
                                                "classifier tensors are skipped)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, show_default=False,
                                          help="Threads that decode images, and loader processes when images are "
                                               "streamed from disk (default: up to 8)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 on GPUs, fp32 on CPU), fp32, bf16, fp16."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    strict: bool = typer.Option(False, "--strict", help="Refuse unreadable image files instead of skipping them."),
    name: Optional[str] = typer.Option(None, "--name", help="A name for the run(s)."),
    tag: List[str] = typer.Option([], "--tag", metavar="KEY=VALUE", help="Tag the run(s); repeatable."),
    from_run: Optional[str] = typer.Option(None, "--from", metavar="RUN",
                                           help="Reuse an earlier run's params (and model); options given here win."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings, errors and the final table."),
) -> None:
    """Train one or more models on one shared, stratified split and record every run in the registry."""
    opts: dict[str, Any] = dict(data=data, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                                weight_decay=weight_decay, patience=patience, min_delta=min_delta, split=split,
                                image_size=image_size, seed=seed, pretrained=pretrained,
                                weights=str(weights) if weights else None, device=device, workers=workers,
                                precision=precision, compile=compile, strict=strict)
    models = list(models or [])
    if from_run is not None:
        models = _apply_from(ctx, from_run, models, opts)
    if not models:
        raise ZooError("Name at least one model to train (`zoo models` lists them), or rerun one with --from RUN.")
    if opts["data"] is None:
        raise ZooError("--data is required: an image folder with one sub-folder per class, or a dataset name "
                       "such as demo.")
    tags = dict(parse_tags(tag))
    run_training(models, opts, name=name, tags=tags, quiet=quiet)


def run_training(models: list[str], opts: dict[str, Any], *, name: Optional[str] = None,
                 tags: Optional[dict[str, str]] = None, quiet: bool = False) -> list[dict[str, Any]]:
    """Check everything, then train each model in turn; returns the summary rows. Raises typer.Exit(130) on
    Ctrl-C and typer.Exit(143) on SIGTERM (the run in progress is recorded as interrupted), ZooError on bad input
    or a failed run; any other stop (SystemExit) is re-raised after the run in progress is recorded."""
    with _sigterm_as_interrupt():
        try:
            return _run_training(models, opts, name=name, tags=tags, quiet=quiet)
        except Terminated:  # before any run started: nothing to record
            from zoo.errors import print_error

            print_error("Terminated (SIGTERM).")
            raise typer.Exit(EXIT_SIGTERM)


@contextmanager
def _sigterm_as_interrupt():
    """While ``zoo train`` runs, SIGTERM raises Terminated (a KeyboardInterrupt) once; later ones are ignored
    while the run is being recorded. The previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _check_artifacts(reg) -> Path:
    """The artifacts folder exists (created if missing) and is writable, or a one-line ZooError."""
    import os

    try:
        folder = reg.artifacts_dir
    except OSError as exc:
        where = exc.filename or os.environ.get("ZOO_ARTIFACTS") or "the artifacts folder"
        what = "is a file, not a folder" if Path(str(where)).is_file() else f"cannot be created ({exc.strerror or exc})"
        raise ZooError(f"Artifacts folder {where} {what}; point ZOO_ARTIFACTS at a folder zoo can write "
                       f"(it is created if missing).") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(f"Artifacts folder {folder} is not a writable folder; point ZOO_ARTIFACTS at a folder zoo "
                       f"can write (it is created if missing).")
    return folder


def _run_training(models: list[str], opts: dict[str, Any], *, name: Optional[str], tags: Optional[dict[str, str]],
                  quiet: bool) -> list[dict[str, Any]]:
    from zoo.data import (dataset_record, load_images, make_pipeline, parse_split, resolve_data, scan_images,
                          split_samples)
    from zoo.engine import TrainConfig, build_model, resolve_device, resolve_precision
    from zoo.plugins import get_plugins

    display = Display(quiet)
    # 1. Everything that can be wrong with the command line, before any file is read.
    registry = get_plugins().models()
    infos = [registry.get(m) for m in dict.fromkeys(models)]  # unknown names: error with suggestions
    sizes = {}
    for info in infos:
        size = int(opts["image_size"] or info.default_size)
        if size < info.min_size:
            raise ZooError(f"--image-size {size} is below {info.name}'s minimum of {info.min_size} px; "
                           f"use --image-size {info.min_size} or more.")
        sizes[info.name] = size
        info.check_pretrained(bool(opts["pretrained"]))
    ratios = parse_split(str(opts["split"]))
    opts["split"] = ":".join(str(r) for r in ratios)
    if opts["weights"]:
        weights = Path(opts["weights"]).expanduser()
        if not weights.is_file():
            raise ZooError(f"--weights file '{weights}' does not exist.")
        opts["weights"] = str(weights.resolve())
    dev = resolve_device(str(opts["device"]))
    prec = resolve_precision(str(opts["precision"]), dev)

    # 2. The registry and its artifacts folder: a bad --registry or ZOO_ARTIFACTS fails before any data work.
    with open_registry() as reg:
        _check_artifacts(reg)

        # 3. The data folder listed and checked (classes, counts, split) without decoding a pixel.
        root, dataset_name = resolve_data(str(opts["data"]))
        opts["data"] = dataset_name or str(root)
        scanned = scan_images(root, split=ratios)

        # 4. Every model built (pretrained weights found, --weights fitted) before images are decoded.
        Messages, Recorder = _callback_classes()
        config = TrainConfig(epochs=int(opts["epochs"]), batch_size=int(opts["batch_size"]), lr=float(opts["lr"]),
                             momentum=float(opts["momentum"]), weight_decay=float(opts["weight_decay"]),
                             patience=int(opts["patience"]), min_delta=float(opts["min_delta"]),
                             seed=int(opts["seed"]), pretrained=bool(opts["pretrained"]), weights=opts["weights"],
                             device=str(dev), precision=prec, compile=bool(opts["compile"]))

        built = {info.name: build_model(info, len(scanned.classes), config, Messages(display)) for info in infos}

        # 5. The images: decoded once, split once, for every model.
        display.start("Checking images", 1)
        images = load_images(root, strict=bool(opts["strict"]), image_sizes=list(sizes.values()), split=ratios,
                             workers=opts["workers"], progress=lambda done, total: _progress(display, done, total),
                             warn=lambda text: (display.stop(), print_warning(text)), scanned=scanned)
        display.stop()
        split = split_samples(images, ratios, int(opts["seed"]))
        counts = ", ".join(f"{c} {n}" for c, n in images.counts().items())
        where = f"in memory at {images.cache_side} px" if images.cache is not None else "streamed from disk"
        display.line(f"Data {root}: {len(images.samples)} images, {len(images.classes)} classes ({counts}); split "
                     f"{len(split.train)}/{len(split.val)}/{len(split.test)} (seed {opts['seed']}), {where}")
        dataset = dataset_record(images, split, dataset_name)

        # 6. One run per model. From start_run on, the run is finished whatever stops the command.
        rows: list[dict[str, Any]] = []
        for info in infos:
            size = sizes[info.name]
            params = {**opts, "image_size": size, "resolved_device": str(dev), "resolved_precision": prec}
            recorder = Recorder(reg, None, info.name, config.epochs, display)
            row: dict[str, Any] = {"run": None, "model": info.name, "status": "running"}
            started = time.perf_counter()
            try:
                recorder.run_id = run_id = reg.start_run(model=info.name, plugin=info.plugin, params=params,
                                                         name=name, device=str(dev), dataset=dataset,
                                                         tags=tags or None)
                row["run"] = run_id
                rows.append(row)
                display.line(f"Run {run_id}: {info.name} at {size} px on {dev} ({prec}), batch "
                             f"{config.batch_size}, up to {config.epochs} epochs")
                from zoo.engine import train as train_model

                pipeline = make_pipeline(images, split, image_size=size, batch_size=config.batch_size, device=dev,
                                         workers=opts["workers"])
                result = train_model(info, pipeline, images.classes, config, recorder,
                                     (reg.run_artifacts_dir(run_id) / "best.pt").resolve(),
                                     model=built.pop(info.name))
                recorder.finish(result)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
                if recorder.run_id is None or recorder.finished:
                    raise
                terminated = isinstance(exc, Terminated)
                recorder.stopped("interrupted", "interrupted", "Terminated (SIGTERM)." if terminated else None)
                row.update(status="interrupted", stop_reason="interrupted", best_epoch=recorder.best_epoch,
                           epochs_run=recorder.epochs_run, seconds=time.perf_counter() - started)
                _summary(display, rows)
                print_warning(f"{'Terminated' if terminated else 'Interrupted'}: run {run_id} ({info.name}) "
                              f"recorded as interrupted after {recorder.epochs_run} epoch(s).")
                raise typer.Exit(EXIT_SIGTERM if terminated else EXIT_CTRL_C)
            except Exception as exc:
                if recorder.run_id is None or recorder.finished:
                    raise
                message = " ".join(exc.format_message().split()) if isinstance(exc, ZooError) else \
                    f"{type(exc).__name__}: {exc}"
                recorder.stopped("failed", "error", message)
                from zoo.errors import debug_enabled

                if debug_enabled():
                    raise
                raise ZooError(f"Run {run_id} ({info.name}) failed: {message}") from None
            except BaseException as exc:  # SystemExit (e.g. stdout closed under `| head`), GeneratorExit...
                if recorder.run_id is not None and not recorder.finished:
                    cause = ("its output was closed (broken pipe)" if display.out.quiet and not quiet
                             else f"{type(exc).__name__}({exc})")
                    recorder.stopped("interrupted", "interrupted", f"Stopped: {cause}.")
                    print_warning(f"Run {recorder.run_id} ({info.name}) recorded as interrupted after "
                                  f"{recorder.epochs_run} epoch(s): {cause}.")
                raise
            row.update(status=result.status, stop_reason=result.stop_reason, best_epoch=result.best_epoch,
                       epochs_run=result.epochs_run, seconds=time.perf_counter() - started,
                       test_accuracy=result.metrics.get("test_accuracy"), test_f1=result.metrics.get("test_f1"),
                       test_loss=result.metrics.get("test_loss"), error=result.error)
            if result.status == "failed":
                print_warning(f"Run {run_id} ({info.name}) failed: {result.error}")
            else:
                from zoo.render import fmt_num

                display.line(f"Run {run_id} ({info.name}): {result.stop_reason.replace('_', ' ')} after "
                             f"{result.epochs_run} epoch(s), best epoch {result.best_epoch}, test accuracy "
                             f"{fmt_num(result.metrics.get('test_accuracy'))}")
    _summary(display, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise ZooError(f"{len(failed)} of {len(rows)} run(s) failed: "
                       + "; ".join(f"run {r['run']} ({r['model']}): {r.get('error')}" for r in failed))
    return rows


def _progress(display: Display, done: int, total: int) -> None:
    if display.task is not None and display.progress is not None:
        display.progress.update(display.task, total=total, completed=done)


def _summary(display: Display, rows: list[dict[str, Any]]) -> None:
    display.stop()
    if rows:
        display.out.print(summary_table(rows))
