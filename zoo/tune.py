"""``zoo tune``: a hyper-parameter search with Optuna in which every trial is an ordinary zoo run.

The story: ``parse_space`` reads the command line (a range ``1e-4..1e-1``, a list ``16,32``, a fixed value);
``open_study`` keeps the study in the registry's own database through Optuna's RDB storage (with a heartbeat, so a
killed worker's trial is marked failed and retried once); ``Tuner`` asks Optuna for each trial's values, trains
them through the training service as one run of the study's group, and hands back the run's validation metric at
its best epoch (never a test value). ``TrialPruning`` is the only glue between the engine's epochs and Optuna's
pruner (it ends a run with the engine's ``StopTraining``). ``read_study`` is what ``zoo tune show``, ``zoo report
--study`` and the ui's study page show; ``list_studies`` the ui's list.

Optuna's samplers, pruners and storage are used as they are. Nothing here imports torch or the CLI; Optuna is
imported inside the functions that need it (``pip install zoo-vision[tune]``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from zoo import spec as specs
from zoo.engine.callbacks import StopTraining
from zoo.errors import UnknownName, ZooError
from zoo.training.session import Reporter, RunOutcome
from zoo.vocab import STUDY_TAG, TRIAL_TAG, VAL_ACC, VAL_LOSS, Status, StopReason

if TYPE_CHECKING:
    import optuna

    from zoo.store.api import StudyStore

SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "halving", "hyperband", "none")
METRICS = {"val_loss": (VAL_LOSS, "minimize"), "val_accuracy": (VAL_ACC, "maximize")}  # --metric -> history key
HEARTBEAT_S = 30  # a worker's running trial is refreshed this often; failed when silent for twice as long
MACHINE_OPTIONS = ("workers", "device")  # may differ between the workers of one study
RUN_ATTR = "zoo.run"  # user attribute of each Optuna trial: the zoo run id that trained it
FINISHED = ("COMPLETE", "PRUNED")  # trial states that count toward --trials


# ------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Range:
    """A numeric option sampled between two values (log scale where the spec says so, e.g. lr)."""

    low: float
    high: float
    log: bool
    integer: bool

    def text(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    """An option that takes one of a few values (categorical)."""

    values: tuple

    def text(self) -> str:
        return ",".join(specs.option_text(v) for v in self.values)


Dimension = Union[Range, Choice]


@dataclass(frozen=True)
class Space:
    """What a study searches: option -> Range or Choice, on top of fixed option values."""

    fixed: dict[str, Any]
    dims: dict[str, Dimension]

    def describe(self) -> dict[str, str]:
        """The space as text, recorded with the study: a re-run with another space is refused."""
        return {name: dim.text() for name, dim in sorted(self.dims.items())}

    def suggest(self, trial: "optuna.Trial") -> dict[str, Any]:
        values = {}
        for name, dim in self.dims.items():
            if isinstance(dim, Choice):
                values[name] = trial.suggest_categorical(name, list(dim.values))
            elif dim.integer:
                values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
            else:
                values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        return values

    def grid(self) -> dict[str, list]:
        """The search space of ``--sampler grid``: every dimension must be a list."""
        ranges = [name for name, dim in self.dims.items() if isinstance(dim, Range)]
        if ranges:
            raise ZooError(f"--sampler grid tries lists of values, not ranges: write {specs.option_flag(ranges[0])} "
                           f"as a comma list (e.g. 0.001,0.01,0.1), or use --sampler tpe.")
        return {name: list(dim.values) for name, dim in self.dims.items()}

    def corners(self) -> list[dict[str, Any]]:
        """Values to check before any work: each dimension's ends (or each of its values), the others first."""
        first = {name: (dim.low if isinstance(dim, Range) else dim.values[0]) for name, dim in self.dims.items()}
        points = [first]
        for name, dim in self.dims.items():
            for value in ([dim.high] if isinstance(dim, Range) else dim.values[1:]):
                points.append({**first, name: value})
        return [{k: int(v) if isinstance(self.dims[k], Range) and self.dims[k].integer else v
                 for k, v in p.items()} for p in points]


def parse_space(texts: Mapping[str, Sequence[str]]) -> Space:
    """Search options as typed (option -> its texts) -> a Space, checked; one clear line when one is bad.

    ``a..b`` is a range (numeric options only; a log scale where the spec's field says so, which then needs a
    low end above 0), ``a,b,c`` a list (options a grid may vary), one value a fixed option."""
    fixed: dict[str, Any] = {}
    dims: dict[str, Dimension] = {}
    for name, given in texts.items():
        parts = [part for text in given for part in str(text).split(",")]
        flag = specs.option_flag(name)
        if any(".." in part for part in parts):
            dims[name] = _parse_range(name, flag, parts)
            continue
        values = specs.parse_list(name, given)
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            dims[name] = Choice(tuple(values))
    return Space(fixed, dims)


def _parse_range(name: str, flag: str, parts: list[str]) -> Range:
    if len(parts) != 1:
        raise ZooError(f"{flag} {','.join(parts)}: give either one range (LOW..HIGH) or a list of values, "
                       f"not both.")
    low_text, _, high_text = parts[0].partition("..")
    want = specs.kind(name)
    if want not in (int, float):
        raise ZooError(f"{flag} {parts[0]}: only numeric options take a range; list the values instead "
                       f"({flag} A,B).")
    if name not in specs.GRID_OPTIONS:
        raise ZooError(f"{flag} takes one value; a search varies "
                       f"{', '.join(specs.option_flag(n) for n in specs.GRID_OPTIONS)}.")
    if not low_text.strip() or not high_text.strip():
        raise ZooError(f"{flag} {parts[0]}: a range needs both ends, e.g. {flag} 1e-4..1e-1.")
    low, high = specs.convert(name, low_text), specs.convert(name, high_text)
    if not math.isfinite(low) or not math.isfinite(high):
        raise ZooError(f"{flag} {parts[0]}: both ends must be finite numbers.")
    if not low < high:
        raise ZooError(f"{flag} {parts[0]}: the low end must be below the high end, e.g. {flag} "
                       f"{min(low, high):g}..{max(low, high):g}.")
    log = specs.log_scale(name)
    if log and low <= 0:
        raise ZooError(f"{flag} {parts[0]}: sampled on a log scale, so the low end must be above 0 "
                       f"(e.g. {flag} 1e-6..{high:g}).")
    return Range(low, high, log, want is int)


def default_study_name(model: str, space: Space, metric: str) -> str:
    """Re-running the same command continues the same study: the name is the model and a digest of the rest."""
    fixed = {k: specs.option_text(v) for k, v in sorted(space.fixed.items()) if k not in MACHINE_OPTIONS}
    text = json.dumps([space.describe(), fixed, metric], sort_keys=True)
    return f"{model}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class Settings:
    """One ``zoo tune`` command, resolved: the study and how it searches."""

    model: str
    study: str
    space: Space
    metric: str = "val_loss"
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int = 10
    timeout: Optional[float] = None
    sampler_seed: Optional[int] = None
    heartbeat: int = HEARTBEAT_S

    @property
    def key(self) -> str:
        return METRICS[self.metric][0]

    @property
    def direction(self) -> str:
        return METRICS[self.metric][1]

    def attrs(self) -> dict[str, Any]:
        """What the study records once (user attributes), so that `zoo tune show` can rebuild the command."""
        return {"zoo.model": self.model, "zoo.metric": self.metric, "zoo.space": self.space.describe(),
                "zoo.fixed": {k: specs.option_text(v) for k, v in sorted(self.space.fixed.items())
                              if k not in MACHINE_OPTIONS}}


def storage_url(registry: Any) -> str:
    """The registry's own database as an SQLAlchemy URL Optuna can open (password included)."""
    if getattr(registry, "path", None) is not None:
        return f"sqlite:///{registry.path.resolve()}"
    return registry.engine.url.render_as_string(hide_password=False)


def open_storage(registry: Any, *, heartbeat: Optional[int] = None,
                 create: bool = True) -> "optuna.storages.RDBStorage":
    """Optuna's RDB storage in the registry's database. Workers starting together may race to create Optuna's
    tables in a new registry: the loser tries again. On a registry opened read-only, a storage that reads through
    the registry's own read-only connections (see ``_reading_storage``)."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    if getattr(registry, "readonly", False):
        return _reading_storage(registry)
    url = storage_url(registry)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna calls its heartbeat experimental (since v2.8)
                beat = {} if heartbeat is None else dict(
                    heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
                return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create, **beat)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _reading_storage(registry: Any) -> "optuna.storages.RDBStorage":
    """Optuna's storage for reading a study in a read-only registry, writing nothing. SQLite: Optuna's engine
    borrows the registry's own connections (its read-only URI and query-only pragma: nothing is created beside the
    file, even in a read-only folder), one per use, handed back at once. PostgreSQL: every transaction is READ
    ONLY, as the registry's own. Optuna's tables must be there (``_storage_to_read`` checks)."""
    from optuna.storages import RDBStorage
    from sqlalchemy.pool import NullPool

    if getattr(registry, "path", None) is not None:
        return RDBStorage("sqlite://", engine_kwargs={"creator": registry.engine.raw_connection,
                                                      "poolclass": NullPool}, skip_table_creation=True)
    from zoo.store import postgres

    storage = RDBStorage(storage_url(registry), engine_kwargs={"pool_pre_ping": True}, skip_table_creation=True)
    postgres.configure(storage.engine, readonly=True)
    return storage


def make_sampler(name: str, space: Space, seed: Optional[int]) -> "optuna.samplers.BaseSampler":
    from optuna import samplers

    if name == "grid":
        return samplers.GridSampler(space.grid(), seed=seed)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
        except ImportError:
            raise ZooError("--sampler cmaes needs the cmaes package: pip install 'zoo-vision[tune]'.") from None
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return samplers.TPESampler(seed=seed)


def make_pruner(name: str, trials: int, epochs: Optional[int]) -> "optuna.pruners.BasePruner":
    """Optuna's pruners, started early enough to matter in a small study: the median rule compares from the
    third finished trial on (a quarter of the study for larger ones, at most 5), from epoch 2."""
    from optuna import pruners

    if name == "none":
        return pruners.NopPruner()
    if name == "halving":
        return pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return pruners.HyperbandPruner(min_resource=1, max_resource=epochs or "auto")
    return pruners.MedianPruner(n_startup_trials=min(5, max(2, trials // 4)), n_warmup_steps=2)


def open_study(registry: Any, settings: Settings, epochs: Optional[int]) -> "optuna.Study":
    """The study, created in the registry or loaded to go on; a study of another model, metric or space is a
    one-line error (pick another --study name)."""
    import optuna

    storage = open_storage(registry, heartbeat=settings.heartbeat)
    study = optuna.create_study(storage=storage, study_name=settings.study, direction=settings.direction,
                                sampler=make_sampler(settings.sampler, settings.space, settings.sampler_seed),
                                pruner=make_pruner(settings.pruner, settings.trials, epochs), load_if_exists=True)
    recorded = study.user_attrs
    for key, value in settings.attrs().items():
        if key not in recorded:
            study.set_user_attr(key, value)
        elif recorded[key] != value:
            what = key.removeprefix("zoo.")
            raise ZooError(f"Study {settings.study} was started with another {what} ({_short(recorded[key])}, "
                           f"here {_short(value)}); pick another --study name, or run it as it was.")
    return study


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{specs.option_flag(k)} {v}" for k, v in value.items()) or "none"
    return str(value)


def own_share(study: "optuna.Study", trials: int) -> int:
    """How many trials this worker runs. Alone on its study (no trial running elsewhere) it continues the study
    up to ``trials`` finished ones; joining workers that are running it, it adds ``trials`` of its own."""
    import warnings

    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks it experimental; it is what optimize() itself calls
        fail_stale_trials(study)  # a killed worker's trial is failed (and retried) before counting
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if TrialState.RUNNING in states:
        return trials
    return max(0, trials - sum(s.name in FINISHED for s in states))


# --------------------------------------------------------------------------------------------- trials


class TuneReporter(Reporter):
    """What a tuning worker tells its caller, on top of each run's session reports."""

    def on_trial_start(self, trial: "optuna.Trial", index: int, total: int, params: dict[str, Any],
                       best: Optional[float]) -> None:
        pass

    def on_trial_end(self, trial: "TrialEnd") -> None:
        pass


@dataclass(frozen=True)
class TrialEnd:
    number: int
    index: int  # 1.. in this worker
    total: int  # this worker's share
    params: dict[str, Any]
    run_id: Optional[int]
    state: str  # complete | pruned | failed
    value: Optional[float]
    epochs: int
    best: Optional[float]  # the study's best value after this trial
    error: Optional[str] = None


class TrialPruning(Reporter):
    """The glue between one run's epochs and its Optuna trial: every report goes on to ``inner``; each epoch's
    validation value is reported to the trial, and when the pruner says so the engine's ``StopTraining`` ends the
    run 'pruned' (its history kept, nothing tested)."""

    def __init__(self, inner: Reporter, trial: "optuna.Trial", key: str):
        self.inner, self.trial, self.key = inner, trial, key

    def on_epoch_end(self, epoch, values, improved) -> None:
        self.inner.on_epoch_end(epoch, values, improved)
        value = getattr(values, self.key)
        if not math.isfinite(value):
            return  # the engine ends a NaN run itself: 'failed'
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise StopTraining(StopReason.PRUNED.value, status=Status.PRUNED,
                               error=f"Pruned after epoch {epoch}: {self.key} {value:.4g} lags the study's other "
                                     f"trials.")

    def on_run_start(self, run_id, planned) -> None:
        self.trial.set_user_attr(RUN_ATTR, run_id)
        self.inner.on_run_start(run_id, planned)

    # everything else: passed on unchanged
    def on_message(self, text) -> None:
        self.inner.on_message(text)

    def on_warning(self, text) -> None:
        self.inner.on_warning(text)

    def on_epoch_start(self, epoch, batches) -> None:
        self.inner.on_epoch_start(epoch, batches)

    def on_batch(self, epoch, batch, batches, running_loss, images_per_sec) -> None:
        self.inner.on_batch(epoch, batch, batches, running_loss, images_per_sec)

    def on_checkpoint(self, path, epoch) -> None:
        self.inner.on_checkpoint(path, epoch)

    def on_test(self, metrics, confusion) -> None:
        self.inner.on_test(metrics, confusion)

    def on_decode(self, done, total) -> None:
        self.inner.on_decode(done, total)

    def on_data(self, images, split, planned) -> None:
        self.inner.on_data(images, split, planned)

    def on_run_end(self, outcome) -> None:
        self.inner.on_run_end(outcome)

    def stop_cause(self, exc) -> str:
        return self.inner.stop_cause(exc)


class TrialFailed(Exception):
    """A trial's run failed (a NaN loss, a crash): the trial is 'failed' in the study and the search goes on."""


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended a trial's run: the worker stops (the run is recorded 'interrupted')."""

    def __init__(self, by: str):
        super().__init__(by)
        self.by = by


@dataclass
class Tuner:
    """One worker of a study: trains the trials Optuna asks for, each as one session of one run."""

    registry: Any
    settings: Settings
    base: dict[str, Any]  # model, data and every fixed option
    reporter: TuneReporter = field(default_factory=TuneReporter)
    images: dict[tuple, Any] = field(default_factory=dict)  # decoded once for every trial of this worker
    ended: list[TrialEnd] = field(default_factory=list)
    total: int = 0

    def check(self) -> None:
        """Every spec the space can make is valid (sizes, choices, device) and the data is there: before any
        trial, so a bad space is one line and no run."""
        from zoo.training import check_specs, make_plan

        points = self.settings.space.corners()
        check_specs([self.spec(point, -1) for point in points])
        make_plan([self.spec(points[0], -1)], self.registry, group=self.settings.study)

    def spec(self, values: Mapping[str, Any], number: int) -> specs.RunSpec:
        tags = ((STUDY_TAG, self.settings.study), (TRIAL_TAG, str(number)))
        return specs.RunSpec(**{**self.base, **values}, tags=tags)

    def run(self, study: "optuna.Study") -> list[TrialEnd]:
        """This worker's share of the study (see ``own_share``), within --timeout."""
        self.total = own_share(study, self.settings.trials)
        if self.total:
            study.optimize(self.objective, n_trials=self.total, timeout=self.settings.timeout, catch=(TrialFailed,))
        return self.ended

    def objective(self, trial: "optuna.Trial") -> float:
        import optuna

        from zoo.training import Session, make_plan

        params = self.settings.space.suggest(trial)
        index = len(self.ended) + 1
        self.reporter.on_trial_start(trial, index, self.total, params, best_value(trial.study))
        plan = make_plan([self.spec(params, trial.number)], self.registry, group=self.settings.study)
        result = Session(plan, self.registry, TrialPruning(self.reporter, trial, self.settings.key),
                         decode=self._decode).run()
        outcome = result.outcomes[0] if result.outcomes else None
        if result.stopped_by or outcome is None:
            raise Stopped(result.stopped_by or "Ctrl-C")
        end = dict(number=trial.number, index=index, total=self.total, params=params, run_id=outcome.run_id,
                   epochs=outcome.epochs_run)
        if outcome.status == Status.PRUNED:
            self._ended(trial, end, "pruned", self._value(outcome, last=True))
            raise optuna.TrialPruned(outcome.error)
        if outcome.status != Status.COMPLETED:
            self._ended(trial, end, "failed", None, outcome.error)
            raise TrialFailed(outcome.error or str(outcome.status))
        value = self._value(outcome)
        if value is None:
            self._ended(trial, end, "failed", None, "no validation value was recorded")
            raise TrialFailed("no validation value was recorded")
        self._ended(trial, end, "complete", value)
        return value

    def _value(self, outcome: RunOutcome, *, last: bool = False) -> Optional[float]:
        """The recorded validation metric at the run's best epoch (its kept weights), or at its last one."""
        series = dict(self.registry.history(outcome.run_id, [self.settings.key]).get(self.settings.key, []))
        epoch = max(series, default=None) if last or outcome.best_epoch is None else outcome.best_epoch
        value = series.get(epoch)
        return value if value is not None and math.isfinite(value) else None

    def _ended(self, trial: "optuna.Trial", end: dict, state: str, value: Optional[float],
               error: Optional[str] = None) -> None:
        best = best_value(trial.study)
        if state == "complete" and value is not None:
            better = best is None or (value < best if self.settings.direction == "minimize" else value > best)
            best = value if better else best
        record = TrialEnd(**end, state=state, value=value, best=best, error=error)
        self.ended.append(record)
        self.reporter.on_trial_end(record)

    def _decode(self, root, **kwargs):
        from zoo.data import load_images

        key = (str(root), kwargs.get("strict"), tuple(sorted(kwargs.get("image_sizes") or ())))
        if key not in self.images:
            self.images[key] = load_images(root, **kwargs)
        return self.images[key]


def best_value(study: "optuna.Study") -> Optional[float]:
    try:
        return study.best_value
    except ValueError:  # no complete trial yet
        return None


# ------------------------------------------------------------------------------------------ the report
# What `zoo tune show`, `zoo report --study` and the ui's study pages show, read in one place (``read_study``,
# ``list_studies``). Reading opens Optuna's storage on the registry's own read-only connections when the registry
# was opened read-only: it writes nothing and imports no torch.


@dataclass(frozen=True)
class TrialRow:
    """One trial of a study as `zoo tune show`, `zoo report --study` and the ui show it (text cells; the run's id
    to link; ``state`` as Optuna names it, ``shown_state`` with the retry it is)."""

    trial: int
    state: str
    shown_state: str
    run: Optional[int]
    run_status: str
    epochs: int
    value: str
    params: list[str]
    time: str
    best: bool


@dataclass
class StudyReport:
    name: str
    model: str
    metric: str
    direction: str
    space: dict[str, str]
    fixed: dict[str, str]
    trials: list[dict[str, Any]]  # number, state, value, run, epochs, params...
    best: Optional[dict[str, Any]]
    importances: dict[str, float]
    importance_note: Optional[str] = None

    @property
    def params(self) -> list[str]:
        """The searched parameters, in the order the trials first name them (the table's columns)."""
        return list(dict.fromkeys(k for t in self.trials for k in t["params"]))

    @property
    def finished(self) -> int:
        return sum(t["state"].upper() in FINISHED for t in self.trials)

    def rows(self) -> list[TrialRow]:
        """The trials table, in trial order, one ``TrialRow`` each (the params in ``self.params``'s order)."""
        from zoo import render

        best = self.best["trial"] if self.best else None
        rows = []
        for t in self.trials:
            shown = t["state"] + (f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
            cells = [f"{t['params'][p]:.4g}" if isinstance(t["params"].get(p), float)
                     else specs.option_text(t["params"][p]) if p in t["params"] else "—" for p in self.params]
            rows.append(TrialRow(t["trial"], t["state"], shown, t["run"], t["run_status"] or "—", t["epochs"],
                                 render.fmt_num(t["value"]), cells, render.fmt_duration(t["seconds"]),
                                 t["trial"] == best))
        return rows


@dataclass(frozen=True)
class StudySummary:
    """One line of the list of studies (the ui's /studies page)."""

    name: str
    model: str
    metric: str
    direction: str
    trials: int
    best_trial: Optional[int]
    best_value: Optional[float]
    best_run: Optional[int]


def optuna_or_error(what: str) -> Any:
    """Optuna, quiet, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ZooError(f"{what} needs Optuna: pip install 'zoo-vision[tune]'.") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def _storage_to_read(registry: Any) -> Optional["optuna.storages.RDBStorage"]:
    """Optuna's storage in the registry, or None when no study was ever recorded there (no Optuna tables)."""
    from sqlalchemy import inspect

    with registry.engine.connect() as conn:
        if "studies" not in set(inspect(conn).get_table_names()):
            return None
    return open_storage(registry, create=False)


def load_study(registry: Any, name: str) -> "optuna.Study":
    """A study recorded in this registry, or a one-line error (UnknownName) naming those there are."""
    import optuna

    storage = _storage_to_read(registry)
    if storage is None:
        raise UnknownName(f"Registry {registry.location} holds no study: `zoo tune MODEL --data D --study {name} "
                          f"...` starts one.")
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        raise UnknownName(f"No study '{name}' in registry {registry.location}; there are: "
                          f"{', '.join(sorted(names)) or 'none'}.")
    return optuna.load_study(study_name=name, storage=storage)


def read_study(registry: "StudyStore", name: str) -> StudyReport:
    """The study ``name`` as `zoo tune show`, `zoo report --study` and the ui show it: every trial with its run
    and that run's status in the registry, the best trial with its reproducing command, importances."""
    def run_status(run_id: int) -> Optional[str]:
        try:
            return registry.get_run(run_id).display_status
        except ZooError:
            return "deleted"

    return study_report(load_study(registry, name), run_status)


def list_studies(registry: "StudyStore") -> list[StudySummary]:
    """Every study in the registry, by name: its trials and best trial (none when no trial completed yet)."""
    import optuna

    storage = _storage_to_read(registry)
    if storage is None:
        return []
    found = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=True):
        attrs, best = s.user_attrs, s.best_trial
        found.append(StudySummary(s.study_name, attrs.get("zoo.model", "?"), attrs.get("zoo.metric", "?"),
                                  s.direction.name.lower(), s.n_trials, best.number if best else None,
                                  best.value if best else None, best.user_attrs.get(RUN_ATTR) if best else None))
    return sorted(found, key=lambda s: s.name)


def study_report(study: "optuna.Study", run_status: Callable[[int], Optional[str]] = lambda _: None) -> StudyReport:
    """Every trial (with its run and that run's status as the registry reads it), the best one, and Optuna's
    parameter importances (with fewer than two finished trials, or one value everywhere, a note instead).

    Importances are Optuna's PED-ANOVA (its default evaluator since 5.0, named here so a new default cannot change
    them): computed without any random draw, so every read of the same trials gives the same numbers, and with no
    scikit-learn (fANOVA fits a random forest with it)."""
    import warnings

    import optuna

    attrs = study.user_attrs
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get(RUN_ATTR)
        value = t.value if t.state.name == "COMPLETE" else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": value, "run": run,
                     "run_status": run_status(run) if run is not None else None,
                     "epochs": len(t.intermediate_values), "params": dict(t.params),
                     "retry_of": t.system_attrs.get("failed_trial"),
                     "seconds": t.duration.total_seconds() if t.duration else None})
    best = None
    try:
        bt = study.best_trial
        best = {"trial": bt.number, "value": bt.value, "run": bt.user_attrs.get(RUN_ATTR), "params": dict(bt.params),
                "command": train_command(attrs.get("zoo.model", "MODEL"), attrs.get("zoo.fixed", {}), bt.params)}
    except ValueError:
        pass
    importances: dict[str, float] = {}
    note = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna 4
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importances = {k: float(v) for k, v in
                           optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (ValueError, RuntimeError) as exc:
        note = f"no parameter importances yet ({' '.join(str(exc).split())})"
    if not importances and note is None:
        note = "no parameter importances yet (fewer than two finished trials, or nothing varied)"
    return StudyReport(study.study_name, attrs.get("zoo.model", "?"), attrs.get("zoo.metric", "?"),
                       study.direction.name.lower(), attrs.get("zoo.space", {}), attrs.get("zoo.fixed", {}), rows,
                       best, importances, note)


def train_command(model: str, fixed: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """The `zoo train` command line that trains a trial's options again."""
    import shlex

    words = ["zoo", "train", model]
    for name, value in {**fixed, **{k: specs.option_text(v) for k, v in params.items()}}.items():
        flag = specs.option_flag(name)
        if specs.kind(name) is bool:  # zoo train spells these as flags: --hflip / --no-hflip
            words.append(flag if str(value).lower() == "true" else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def save_plots(study: "optuna.Study", folder: Any) -> list[Any]:
    """The optimisation history and a parallel-coordinates plot as PNG files (matplotlib through Optuna)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for stem, draw in (("history", plots.plot_optimization_history),
                           ("parallel", plots.plot_parallel_coordinate)):
            axes = draw(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            path = folder / f"{study.study_name}-{stem}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            matplotlib.pyplot.close(figure)
            written.append(path)
    return written
