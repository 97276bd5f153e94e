"""Running a plan: each run's lifecycle in the registry, whatever stops it.

From ``start_run`` on, a run always ends recorded: the engine's result ('completed', or 'failed' on a NaN loss);
'failed' with the error when anything raises (a plugin crash, out of memory) — and the session goes on with the
next run unless ``fail_fast``; a callback's own end through the engine's ``StopTraining`` (``zoo tune``'s pruning:
'pruned'); 'interrupted' on Ctrl-C
or SIGTERM, which stop the whole session; 'interrupted' with the cause on any other stop from outside (SystemExit,
e.g. rich exiting when stdout is a closed pipe), which is re-raised unchanged.

Images are decoded once per data source for the whole session; one model is in memory at a time (built just
before its run). Nothing here imports Typer or rich: the caller sees everything through a ``Reporter``.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from zoo.distributed import World, current
from zoo.engine import Callback, Callbacks, Progress, TrainResult
from zoo.errors import LoaderStopped, ZooError
from zoo.training.plan import Plan, PlannedRun
from zoo.vocab import FROM_TAG, GROUP_TAG, Status, StopReason

if TYPE_CHECKING:
    from zoo.data import ImageSet, Split
    from zoo.store.api import RunRecorder

EXIT_CTRL_C = 130
EXIT_SIGTERM = 143  # 128 + SIGTERM, what shells report for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM during a session: handled exactly like Ctrl-C, but the command exits 143."""


@dataclass
class RunOutcome:
    """How one run of the session ended (a row of the final table)."""

    run_id: Optional[int]
    planned: PlannedRun
    status: Status = Status.RUNNING
    stop_reason: Optional[StopReason] = None
    best_epoch: Optional[int] = None
    epochs_run: int = 0
    seconds: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def model(self) -> str:
        return self.planned.spec.model


@dataclass
class SessionResult:
    outcomes: list[RunOutcome]
    stopped_by: Optional[str] = None  # 'Ctrl-C' | 'SIGTERM' when the session was interrupted
    skipped: int = 0  # planned runs never started (interrupted, or --fail-fast after a failure)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == Status.FAILED]

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return EXIT_SIGTERM if self.stopped_by == "SIGTERM" else EXIT_CTRL_C
        return 1 if self.failed else 0


class Reporter(Callbacks):
    """What a session tells its caller, on top of the engine's callbacks (all no-ops here)."""

    def on_decode(self, done: int, total: int) -> None:
        pass

    def on_data(self, images: "ImageSet", split: "Split", planned: PlannedRun) -> None:
        pass

    def on_run_start(self, run_id: int, planned: PlannedRun) -> None:
        pass

    def on_run_end(self, outcome: RunOutcome) -> None:
        pass

    def stop_cause(self, exc: BaseException) -> str:
        """Why a run was stopped from outside (SystemExit and the like), in the words recorded as its error."""
        return f"{type(exc).__name__}({exc})"


@dataclass
class RunContext:
    """Everything one run's training needs; ``train_run`` is the real use of it, tests pass their own."""

    planned: PlannedRun
    images: "ImageSet"
    split: "Split"
    callbacks: list  # the session's callbacks (recorder, progress, stop signal), called after the engine's own
    checkpoint: Optional[Path]  # None on torchrun ranks other than 0: rank 0 writes the checkpoints
    resume: Optional[dict] = None  # the run's last.pt when it goes on after an interruption (--resume)
    run_id: Optional[int] = None
    reporter: Callbacks = field(default_factory=Callbacks)  # messages while the model is built


@dataclass(frozen=True)
class ResumePoint:
    """An interrupted or stale run to go on with (``zoo train --resume RUN``): its row, last.pt, and the data
    fingerprint it trained on (a changed data folder is refused before the row changes)."""

    run_id: int
    state: dict
    fingerprint: Optional[str]
    seen: Any = None  # the row as read before (RunView): claimed only if nobody else changed it meanwhile


def train_run(ctx: RunContext) -> TrainResult:
    """Build the model (one in memory at a time), make its pipeline, train and test it."""
    from zoo.data import augment_for, make_pipeline
    from zoo.engine import build_model, resolve_config, train
    from zoo.plugins import get_plugins

    run, plugins = ctx.planned, get_plugins()
    config = resolve_config(run.spec, run.resolved, plugins)  # the recipe applied once, read by every step
    model = build_model(run.info, len(ctx.images.classes), config, ctx.reporter)
    pipeline = make_pipeline(ctx.images, ctx.split, image_size=config.image_size, batch_size=config.batch_size,
                             device=config.device, workers=run.spec.workers,
                             augment=augment_for(config.augment, config.hflip), world=current(),
                             prep=run.info.preprocess)
    return train(run.info, pipeline, ctx.images.classes, config, None, ctx.callbacks, ctx.checkpoint,
                 model=model, resume=ctx.resume, plugins=plugins, run_id=ctx.run_id, run_name=run.spec.name)


class StopSignal(Callback):
    """Built-in: a SIGTERM noted by the session is raised here, at the loop's next safe point (see ``_Stop``)."""

    def on_epoch_start(self, run, epoch) -> None:
        check_stop()

    def on_batch_end(self, run, epoch, batch, logs) -> None:
        check_stop()

    def on_epoch_end(self, run, epoch, logs) -> None:
        check_stop()


class Recorder(Callback):
    """Built-in: the run's epochs, best checkpoint and test metrics -> the registry; its end, once (``finish``)."""

    def __init__(self, registry: "RunRecorder", run_id: int, reporter: Reporter):
        self.registry, self.run_id, self.reporter = registry, run_id, reporter
        self.epochs_run, self.best_epoch, self.checkpoint = 0, None, None
        self.warned_locked = False  # the "registry is locked" warning is given once per run

    def on_epoch_end(self, run, epoch: int, logs: dict[str, Any]) -> None:
        """The epoch's history, and the best checkpoint when this epoch wrote it, in one transaction: a stop
        before (a signal, a full disk writing last.pt) leaves the run at the previous best, with history for every
        epoch up to it."""
        from zoo.engine import EpochStats

        best = (logs["checkpoint"], epoch) if logs.get("checkpoint") else None
        self.registry.log_epoch(self.run_id, epoch, EpochStats.from_logs(logs).as_row(),
                                **({"checkpoint": best[0], "best_epoch": best[1]} if best else {}))
        self.epochs_run = epoch
        if best is not None:
            self.checkpoint, self.best_epoch = best
        if getattr(self.registry, "pending_writes", 0) and not self.warned_locked:
            self.warned_locked = True
            where = getattr(self.registry, "location", "")
            if getattr(self.registry, "waiting_for", "lock") == "connection":
                what = f"Lost the connection to registry {where}: training goes on, its epochs are recorded when " \
                       f"it is back (zoo gives up after 10 min)."
            else:
                what = f"Registry {where} is locked by another process: training goes on, its epochs are " \
                       f"recorded when it is free (zoo gives up after 10 min)."
            self.reporter.on_warning(what)

    def on_train_end(self, run, result: TrainResult) -> None:
        if result.confusion is not None:
            self.registry.log_metrics(self.run_id, result.metrics, confusion=result.confusion)

    def finish(self, outcome: RunOutcome, status: Status, stop_reason: Any, error: Optional[str] = None,
               result: Optional[TrainResult] = None) -> None:
        """Record the run's end (once) and fill ``outcome``."""
        if result is not None:
            self.best_epoch, self.epochs_run, self.checkpoint = result.best_epoch, result.epochs_run, result.checkpoint
            outcome.metrics = dict(result.metrics)
        outcome.status, outcome.stop_reason, outcome.error = status, stop_reason, error
        outcome.best_epoch, outcome.epochs_run = self.best_epoch, self.epochs_run
        try:
            self.registry.finish_run(self.run_id, status.value, stop_reason=str(stop_reason),
                                     best_epoch=self.best_epoch, epochs_run=self.epochs_run,
                                     checkpoint=self.checkpoint, error=error)
        except ZooError as exc:  # the registry itself is unwritable: say how the run ended all the same
            how = f"{status.value} ({error})" if error else status.value
            raise ZooError(f"Run {self.run_id} ended {how}, but the registry could not record it: "
                           f"{error_text(exc)} It will show as stale.") from exc


def error_text(exc: BaseException) -> str:
    """An exception as the one line recorded in the run's error."""
    if isinstance(exc, ZooError):
        return " ".join(exc.format_message().split())
    return f"{type(exc).__name__}: {exc}"


class Session:
    """Runs a plan's runs in order. ``run()`` returns a SessionResult; it raises only what must stop the process
    (SystemExit and the like), after recording the run in progress."""

    def __init__(self, plan: Plan, registry: "RunRecorder", reporter: Optional[Reporter] = None, *,
                 train_fn: Callable[[RunContext], TrainResult] = train_run, fail_fast: bool = False,
                 world: Optional[World] = None, decode: Optional[Callable[..., "ImageSet"]] = None,
                 claimed: Optional[dict[int, int]] = None, resume: Optional[ResumePoint] = None):
        """``claimed``: plan index -> the id of a queued row this process claimed (``zoo worker``): that run is
        recorded in its row (``registry.start_claimed``) instead of a new one (``registry.start_run``)."""
        self.plan, self.registry = plan, registry
        self.world = world or current()  # under torchrun: rank 0 records, a crash on any rank ends every rank
        self.claimed = dict(claimed or {})
        self.resume = resume  # for a plan of one run
        self.reporter = reporter or Reporter()
        self.train_fn, self.fail_fast = train_fn, fail_fast
        self._decode = decode
        self._images: dict[tuple, "ImageSet"] = {}
        self._splits: dict[tuple, "Split"] = {}
        self.decodes = 0  # how many times a data source was decoded (once each, whatever the number of runs)

    def run(self) -> SessionResult:
        outcomes: list[RunOutcome] = []
        result = SessionResult(outcomes)
        with sigterm_as_interrupt():
            try:
                for index, planned in enumerate(self.plan.runs):
                    check_stop()  # a SIGTERM during the last run's test: stop before the next one
                    images, split = self._data(planned)
                    outcome = RunOutcome(None, planned)
                    self._run_one(planned, images, split, outcome, outcomes, self.claimed.get(index))
                    broken = self.world.size > 1 and outcome.stop_reason == StopReason.ERROR  # a rank crashed
                    if outcome.status == Status.FAILED and (self.fail_fast or broken):
                        result.skipped = len(self.plan.runs) - index - 1
                        break
            except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C or SIGTERM: the run in progress is recorded
                stop = exc if isinstance(exc, KeyboardInterrupt) else stopped_by_signal(exc)
                if stop is None:  # a real error outside any run (a stopped loader worker is not one)
                    raise
                _Stop.delivered = True
                _release_frames(exc)
                result.stopped_by = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
                result.skipped = len(self.plan.runs) - len(outcomes)
        return result

    # ------------------------------------------------------------------------------------------- data
    def _data(self, planned: PlannedRun) -> tuple["ImageSet", "Split"]:
        from zoo.data import load_images, split_samples, split_warning

        source = self.plan.source(planned)
        images = self._images.get(source.key)
        if images is None:
            decode = self._decode or load_images
            images = decode(source.root, strict=planned.spec.strict, image_sizes=source.image_sizes,
                            split=planned.ratios, workers=source.workers, progress=self.reporter.on_decode,
                            warn=self.reporter.on_warning, scanned=source.scan)
            self._images[source.key] = images
            self.decodes += 1
            thin = split_warning(images.counts(), planned.ratios)  # once per data source, as it is decoded
            if thin:
                self.reporter.on_warning(thin)
        split = self._splits.get(planned.spec.split_key)  # runs differing only in --seed share one split
        if split is None:
            split = self._splits[planned.spec.split_key] = split_samples(images, planned.ratios,
                                                                         planned.spec.split_seed)
        self.reporter.on_data(images, split, planned)
        return images, split

    # ------------------------------------------------------------------------------------------- runs
    def _params(self, planned: PlannedRun) -> dict[str, Any]:
        """The run's options as recorded, plus world size and per-rank and global batch size under torchrun."""
        params = planned.spec.to_params(planned.resolved)
        params.update(planned.info.preprocess.params())  # the model's normalisation and eval transform
        params.update(self.world.params(planned.spec.batch_size, planned.resolved.device))
        return params

    def _run_one(self, planned: PlannedRun, images: "ImageSet", split: "Split", outcome: RunOutcome,
                 outcomes: list[RunOutcome], claimed: Optional[int] = None) -> None:
        """One run: its row, its training, its recorded end (``_ended_early`` when the training raised)."""
        run_id = self._start(planned, images, split, claimed)
        outcome.run_id = run_id
        outcomes.append(outcome)
        key = f"run{len(outcomes)}"  # the same on every rank: they run the same plan in order
        recorder = self._recorder(run_id)
        started = time.perf_counter()
        try:
            self.reporter.on_run_start(run_id, planned)
            result = self._train(self._context(planned, images, split, run_id, recorder))
        except BaseException as exc:
            outcome.seconds = time.perf_counter() - started
            then = self._ended_early(exc, key, recorder, outcome)
            if then is exc:
                raise
            if then is not None:
                raise then from exc
            return
        outcome.seconds = time.perf_counter() - started
        self._record_predictions(run_id, images, split, result)
        recorder.finish(outcome, Status(result.status), result.stop_reason, result.error, result)
        self.reporter.on_run_end(outcome)

    def _start(self, planned: PlannedRun, images: "ImageSet", split: "Split", claimed: Optional[int]) -> int:
        """The run's row: a new one, the queued row this worker claimed, or (``--resume``) its own row reopened,
        refused when the data it trained on changed."""
        from zoo.data import dataset_record

        spec = planned.spec
        tags = dict(spec.tags)
        tags[GROUP_TAG] = self.plan.group
        if spec.parent is not None:
            tags[FROM_TAG] = str(spec.parent)
        start = self.registry.start_run if claimed is None else partial(self.registry.start_claimed, claimed)
        record = dataset_record(images, split, self.plan.source(planned).name)
        if self.resume is not None:
            if self.resume.fingerprint and record.fingerprint != self.resume.fingerprint:
                raise ZooError(f"Run {self.resume.run_id} trained on other files than {record.path} holds now "
                               f"(fingerprint {self.resume.fingerprint[:12]}, now {record.fingerprint[:12]}); it "
                               f"cannot be resumed. Start a new run with zoo train --from {self.resume.run_id}.")
            start = partial(_reopen, self.registry, self.resume)
        return start(
            model=spec.model, plugin=planned.info.plugin, params=self._params(planned), name=spec.name,
            device=planned.resolved.device, dataset=record.as_row(), tags=tags)

    def _recorder(self, run_id: int) -> Recorder:
        """The run's Recorder; a resumed run's starts from what its row says already, should it stop again."""
        recorder = Recorder(self.registry, run_id, self.reporter)
        if self.resume is not None:
            state = self.resume.state
            recorder.epochs_run, recorder.best_epoch = int(state["epoch"]), state.get("best_epoch")
            best = self.registry.run_artifacts_dir(run_id) / "best.pt"
            recorder.checkpoint = str(best.resolve()) if recorder.best_epoch and best.is_file() else None
        return recorder

    def _context(self, planned: PlannedRun, images: "ImageSet", split: "Split", run_id: int,
                 recorder: Recorder) -> RunContext:
        """What the train function gets: the session's callbacks after the engine's, and where best.pt goes."""
        checkpoint = (self.registry.run_artifacts_dir(run_id) / "best.pt").resolve() if self.world.is_main else None
        return RunContext(planned, images, split, [recorder, Progress(self.reporter), StopSignal()], checkpoint,
                          self.resume.state if self.resume is not None else None, run_id, self.reporter)

    def _train(self, ctx: RunContext) -> TrainResult:
        _Stop.defer = True  # inside the training, SIGTERM is raised at the next batch (a safe point)
        try:
            return self.train_fn(ctx)
        finally:
            _Stop.defer = False

    def _ended_early(self, exc: BaseException, key: str, recorder: Recorder,
                     outcome: RunOutcome) -> Optional[BaseException]:
        """Record the end of a run whose training raised ``exc``; returns what the session raises then: ``exc``
        itself, another stop (raised from ``exc``), or None to go on with the next run."""
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (Terminated)
            return exc if self._interrupted(exc, key, recorder, outcome) else None
        if isinstance(exc, Exception):
            stop = stopped_by_signal(exc)
            if stop is not None:  # the stop signal reached a loader worker (or a collective) first
                return stop if self._interrupted(stop, key, recorder, outcome) else None
            return self._failed(exc, key, recorder, outcome)
        cause = self.reporter.stop_cause(exc)  # SystemExit (stdout closed under `| head`), GeneratorExit...
        recorder.finish(outcome, Status.INTERRUPTED, StopReason.INTERRUPTED, f"Stopped: {cause}.")
        self.reporter.on_run_end(outcome)
        return exc

    def _interrupted(self, stop: KeyboardInterrupt, key: str, recorder: Recorder, outcome: RunOutcome) -> bool:
        """A run stopped by Ctrl-C or SIGTERM: recorded 'interrupted', and the session stops (True). Under torchrun
        the signal may be torchrun's answer to another rank's crash: that rank's ending wins ('failed'), and the
        session goes on as after any failure (False)."""
        said = "Terminated (SIGTERM)." if isinstance(stop, Terminated) else None
        status, error = self.world.settle(key, Status.INTERRUPTED, said, stop)
        if status == Status.FAILED:
            recorder.finish(outcome, status, StopReason.ERROR, error)
            self.reporter.on_run_end(outcome)
            return False
        recorder.finish(outcome, Status.INTERRUPTED, StopReason.INTERRUPTED, error)
        self.reporter.on_run_end(outcome)
        return True

    def _failed(self, exc: Exception, key: str, recorder: Recorder,
                outcome: RunOutcome) -> Optional[BaseException]:
        """A run that raised: recorded 'failed' with the error, and the session goes on (None); under torchrun,
        'interrupted' when another rank was stopped by Ctrl-C or SIGTERM, and the session stops; with ZOO_DEBUG
        the error itself is raised."""
        from zoo.errors import debug_enabled

        status, error = self.world.settle(key, Status.FAILED, error_text(exc), exc)
        if status == Status.INTERRUPTED:
            recorder.finish(outcome, status, StopReason.INTERRUPTED, error)
            self.reporter.on_run_end(outcome)
            return KeyboardInterrupt()
        recorder.finish(outcome, Status.FAILED, StopReason.ERROR, error)
        if debug_enabled():
            return exc
        self.reporter.on_run_end(outcome)
        return None

    def _record_predictions(self, run_id: int, images: "ImageSet", split: "Split", result: TrainResult) -> None:
        """The test predictions beside the metrics (``zoo compare A B`` pairs runs on them); a run without them
        (a train function of a test) is recorded all the same; under torchrun rank 0 records them."""
        from zoo.predictions import Predictions

        made = getattr(result, "predictions", None)
        if made is None or not self.world.is_main or len(made) != len(split.test):
            return
        truth = [images.samples[i].label for i in split.test]
        try:
            self.registry.log_predictions(run_id, Predictions.of(split.test, truth, made))
        except ZooError as exc:
            self.reporter.on_warning(f"Run {run_id}'s test predictions could not be recorded: {error_text(exc)}")


def _reopen(registry: "RunRecorder", point: ResumePoint, **_row: Any) -> int:
    """A resumed run goes back to 'running' in its own row (params, dataset, tags and history stay), claimed
    atomically: a second ``--resume`` of the same run started meanwhile is refused (ZooError)."""
    if point.seen is not None:
        registry.reopen_run(point.run_id, point.seen)
    else:
        import os

        from zoo.store.views import utcnow

        registry.update_run(point.run_id, status=Status.RUNNING.value, finished=None, stop_reason=None, error=None,
                            heartbeat=utcnow(), pid=os.getpid(), host=registry.host)
    _record_missed_epochs(registry, point)
    return point.run_id


def _record_missed_epochs(registry: "RunRecorder", point: ResumePoint) -> None:
    """last.pt is written before the epoch is recorded: a process killed in between (SIGKILL, a power cut) leaves
    last.pt an epoch ahead of the run's history. The epochs last.pt holds and the row lacks are recorded from it
    before training goes on, so the resumed run's history has every epoch."""
    recorded = int(registry.get_run(point.run_id).epochs_run or 0)
    for epoch, row in enumerate(point.state.get("history", ())[recorded:], start=recorded + 1):
        registry.log_epoch(point.run_id, epoch, row)


class _Stop:
    """SIGTERM as the session saw it. While a run trains, the handler only notes it and the engine's next callback
    raises Terminated (``check_stop``, every batch): an exception raised wherever the signal lands can be lost (in
    logging's at-fork hook as a DataLoader forks) or leave a lock held (a queue's, which the loader's shutdown then
    waits on forever). Outside training (decoding, recording) the handler raises at once."""

    seen: Optional[int] = None
    delivered = False
    defer = False  # while a run trains: raise at the engine's next callback, not wherever the signal lands


def _release_frames(exc: BaseException) -> None:
    """Free the stopped run's frames now: the data generators they hold close, so DataLoader workers are shut down
    here instead of dying later, where torch would report their end as an error at any point of the command."""
    import gc
    import traceback

    for _ in range(3):
        try:
            traceback.clear_frames(exc.__traceback__)
            for chained in (exc.__cause__, exc.__context__):
                if chained is not None:
                    traceback.clear_frames(chained.__traceback__)
            gc.collect()
            return
        except Exception as late:  # a worker's end reported while its loader closes
            if stopped_by_signal(late) is None:
                raise


def check_stop() -> None:
    if _Stop.seen is not None and not _Stop.delivered:
        _Stop.delivered = True
        raise Terminated()


def stopped_by_signal(exc: BaseException) -> Optional[KeyboardInterrupt]:
    """The interruption behind an error, when SIGTERM or Ctrl-C (sent to the whole process group, as timeout,
    Slurm and Kubernetes do) stopped a DataLoader worker before the main process raised its own: a Terminated or
    KeyboardInterrupt to raise instead of recording the run 'failed'; None for a real failure. Decided by types
    alone: the signal this process saw (``_Stop.seen``), or a ``LoaderStopped`` (a worker's exit code) in the
    exception's chain."""
    if _Stop.seen == signal.SIGTERM:
        return Terminated()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LoaderStopped):
            return Terminated() if exc.signum == signal.SIGTERM else KeyboardInterrupt()
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def sigterm_as_interrupt():
    """While a session runs, SIGTERM raises Terminated (a KeyboardInterrupt) once; later ones are ignored while the
    run is being recorded. The previous handler is restored afterwards, unless a torchrun rank shielded the process
    (``World.settle``: a crash ended the command, and torchrun's SIGTERM must not kill this rank before it has said
    how the command ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            _Stop.seen = signum
            if not _Stop.defer:
                raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    _Stop.seen, _Stop.delivered, _Stop.defer = None, False, False
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        _Stop.seen, _Stop.delivered = None, False
