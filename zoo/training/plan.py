"""Planning a training command: every check that can fail before any work, in the order of their cost.

``check_specs`` needs nothing but the specs (models, sizes, split, --weights path, device, precision) and is all
``--dry-run`` does. ``make_plan`` adds the registry's artifacts folder, each data source listed (not decoded),
and the pretrained weights and ``--weights`` files fitted to each architecture, so a missing file fails in
seconds instead of after the images are decoded. Runs that can share decoded images share a ``DataSource``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from zoo.errors import ZooError
from zoo.spec import Resolved, RunSpec, varied

if TYPE_CHECKING:
    from zoo.data import Scan
    from zoo.store.api import RunRecorder
    from zoo.models import ModelInfo


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec  # normalised: data, weights and split as recorded
    info: "ModelInfo"
    resolved: Resolved
    ratios: tuple


@dataclass
class DataSource:
    """One data folder (and --strict) as every run of the command that uses it sees it."""

    key: tuple
    root: Path
    name: Optional[str]  # a registered dataset's name, None for a folder
    scan: "Scan"
    image_sizes: list[int] = field(default_factory=list)
    workers: Optional[int] = None


@dataclass
class Plan:
    runs: list[PlannedRun]
    group: str  # recorded as the zoo.group tag of every run
    sources: dict[tuple, DataSource] = field(default_factory=dict)

    @property
    def varied(self) -> list[str]:
        return varied([r.spec for r in self.runs])

    def source(self, run: PlannedRun) -> DataSource:
        return self.sources[run.spec.data_key]


def new_group() -> str:
    return uuid.uuid4().hex[:8]


def check_specs(specs: list[RunSpec], *, group: Optional[str] = None) -> Plan:
    """Models known, sizes allowed, pretrained weights declared, split and --weights valid, device and precision
    available. Reads no data and opens no registry."""
    from zoo.data import parse_split
    from zoo.distributed import check_device
    from zoo.engine import resolve_device, resolve_precision
    from zoo.plugins import get_plugins

    if not specs:
        raise ZooError("Nothing to train: name at least one model (`zoo models` lists them).")
    models = get_plugins().models()
    devices: dict[tuple[str, str], Resolved] = {}
    runs = []
    for spec in specs:
        spec = spec.with_recipe()  # the recipe's values, recorded as params like any option
        info = models.get(spec.model)  # unknown names: an error with suggestions
        check_parts(spec)
        size = int(spec.image_size or info.default_size)
        if size < info.min_size:
            raise ZooError(f"--image-size {size} is below {info.name}'s minimum of {info.min_size} px; "
                           f"use --image-size {info.min_size} or more.")
        info.check_pretrained(spec.pretrained)
        ratios = parse_split(spec.split)
        changes: dict[str, Any] = {"model": info.name, "split": ":".join(str(r) for r in ratios)}
        if spec.weights:
            weights = Path(spec.weights).expanduser()
            if not weights.is_file():
                raise ZooError(f"--weights file '{weights}' does not exist.")
            changes["weights"] = str(weights.resolve())
        if (spec.device, spec.precision) not in devices:
            dev = resolve_device(spec.device)
            check_device(dev, spec.device)  # under torchrun: cuda:LOCAL_RANK or the CPU
            devices[(spec.device, spec.precision)] = Resolved(str(dev), resolve_precision(spec.precision, dev), 0)
        resolved = replace(devices[(spec.device, spec.precision)], image_size=size)
        runs.append(PlannedRun(replace(spec, **changes), info, resolved, ratios))
    return Plan(runs, group or new_group())


def check_parts(spec: RunSpec) -> None:
    """The optimizer, schedule, loss and callbacks a run names are registered, and its --opt keys are read by
    one of them with values of the right type: one red line otherwise, before any work."""
    from zoo.components import check_options
    from zoo.plugins import get_plugins

    plugins = get_plugins()
    parts = [plugins.components("optimizer").check(str(spec.optimizer)),
             plugins.components("schedule").check(str(spec.schedule)),
             plugins.components("loss").check(spec.loss or "cross_entropy")]
    parts += [plugins.components("callback").check(name) for name in spec.callbacks]
    check_options(dict(spec.opts), parts)


def make_plan(specs: list[RunSpec], registry: Optional["RunRecorder"], *, group: Optional[str] = None) -> Plan:
    """``check_specs``, then the registry's artifacts folder, every data source listed, and every pretrained or
    --weights file fitted to its architecture (non-ZooError build failures are left to the run, which records
    them as 'failed')."""
    from zoo.data import check_split_counts, class_counts, resolve_data, scan_images

    plan = check_specs(specs, group=group)
    if registry is not None:  # None: a torchrun rank other than 0, which writes nothing
        check_artifacts(registry)
    runs, located = [], {}
    for run in plan.runs:
        if run.spec.data not in located:
            located[run.spec.data] = resolve_data(run.spec.data)
        root, name = located[run.spec.data]
        spec = replace(run.spec, data=name or str(root))
        source = plan.sources.get(spec.data_key)
        if source is None:
            source = DataSource(spec.data_key, root, name, scan_images(root, split=run.ratios), workers=spec.workers)
            plan.sources[spec.data_key] = source
        check_split_counts(class_counts(source.scan.classes, [label for _, label, _ in source.scan.files]), run.ratios)
        if run.resolved.image_size not in source.image_sizes:
            source.image_sizes.append(run.resolved.image_size)
        runs.append(replace(run, spec=spec))
    plan.runs = runs
    _check_starting_weights(plan)
    return plan


@dataclass(frozen=True)
class WeightsFile:
    """The pretrained weights file one model of the command loads, and whether it is there."""

    model: str
    path: str
    url: str
    present: bool

    def advice(self) -> str:
        return f"copy {os.path.basename(self.path)} from {self.url} to {self.path}"


def weight_files(runs: list[PlannedRun]) -> list[WeightsFile]:
    """Every pretrained file the runs load (once per model), from each plugin's ``weights_file``; nothing is
    built or downloaded."""
    out: dict[str, WeightsFile] = {}
    for run in runs:
        if run.spec.pretrained and run.info.weights_file is not None and run.info.name not in out:
            path, url = run.info.weights_file()
            out[run.info.name] = WeightsFile(run.info.name, path, url, os.path.isfile(path))
    return list(out.values())


def missing_weights_error(missing: list[WeightsFile]) -> ZooError:
    files = "; ".join(f"'{w.model}': {w.advice()}" for w in missing)
    return ZooError(f"Cannot download {len(missing)} pretrained weights file(s) (offline?): {files}. Or pass "
                    f"local files: --weights FILE (every model) or --weights MODEL=FILE (one each).")


def _check_starting_weights(plan: Plan) -> None:
    """Build each architecture that starts from weights once (then drop it): missing pretrained files (all of
    them, with their destinations) or a --weights file that fits nothing is a one-line error before any image is
    decoded."""
    from zoo.engine import Callbacks, build_model

    missing = {w.model: w for w in weight_files(plan.runs) if not w.present}
    seen, errors = set(), []
    for run in plan.runs:
        spec = run.spec
        key = (spec.model, spec.pretrained, spec.weights, len(plan.source(run).scan.classes))
        if not (spec.pretrained or spec.weights) or key in seen:
            continue
        seen.add(key)
        try:
            build_model(run.info, key[3], spec, Callbacks())  # online, a missing pretrained file downloads here
            missing.pop(spec.model, None)
        except ZooError as exc:
            if spec.model not in missing:
                errors.append(exc)
        except Exception:  # a plugin bug: the run itself fails and is recorded, the others go on
            missing.pop(spec.model, None)
    if missing:
        raise missing_weights_error(list(missing.values()))
    if errors:
        raise errors[0]


@dataclass
class DryRun:
    """What ``--dry-run`` checked: the plan, each data source found (or its problem), each weights file."""

    plan: Plan
    data: list[tuple[str, Optional["DataSource"], Optional[str]]]  # (--data, source, problem)
    weights: list[WeightsFile]

    @property
    def problems(self) -> list[str]:
        return [f"--data {data}: {problem}" for data, _, problem in self.data if problem]


def dry_run(specs: list[RunSpec], *, group: Optional[str] = None) -> DryRun:
    """Every check of ``make_plan`` that needs no registry and decodes nothing, each result kept instead of
    stopping at the first problem: the resolved runs, the data each reads (listed, split counts checked), and
    the pretrained files."""
    from zoo.data import check_split_counts, class_counts, resolve_data, scan_images

    plan = check_specs(specs, group=group)
    data: list[tuple[str, Optional[DataSource], Optional[str]]] = []
    seen: dict[str, int] = {}
    for run in plan.runs:
        if run.spec.data in seen:
            continue
        seen[run.spec.data] = len(data)
        try:
            root, name = resolve_data(run.spec.data)
            source = DataSource((run.spec.data, run.spec.strict), root, name, scan_images(root, split=run.ratios))
            check_split_counts(class_counts(source.scan.classes, [label for _, label, _ in source.scan.files]),
                               run.ratios)
            data.append((run.spec.data, source, None))
        except ZooError as exc:
            data.append((run.spec.data, None, str(exc)))
    return DryRun(plan, data, weight_files(plan.runs))


def check_artifacts(registry: "RunRecorder") -> Path:
    """The registry's artifacts folder exists (created if missing) and is writable, or a one-line ZooError.

    With a database server as registry (PostgreSQL), other machines record runs too, and `zoo predict` or `zoo
    export` may run anywhere: the checkpoints must go to a folder every machine sees, so ZOO_ARTIFACTS (or
    ``artifacts`` in zoo.toml) must name one, and a file is written there and removed to prove it writable."""
    shared = registry.path is None  # no file: a database server (or an in-memory SQLite database)
    if shared and registry.dialect != "sqlite" and not os.environ.get("ZOO_ARTIFACTS"):
        raise ZooError(f"Registry {registry.location} is a database server that other machines use: set "
                       "ZOO_ARTIFACTS (or artifacts in zoo.toml) to a folder every machine sees, such as a network "
                       "share, for the checkpoints.")
    try:
        folder = registry.artifacts_dir
    except OSError as exc:
        where = exc.filename or os.environ.get("ZOO_ARTIFACTS") or "the artifacts folder"
        what = "is a file, not a folder" if Path(str(where)).is_file() else f"cannot be created ({exc.strerror or exc})"
        raise ZooError(f"Artifacts folder {where} {what}; point ZOO_ARTIFACTS at a folder zoo can write "
                       f"(it is created if missing).") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(f"Artifacts folder {folder} is not a writable folder; point ZOO_ARTIFACTS at a folder zoo "
                       f"can write (it is created if missing).")
    if shared:  # a network share may be mounted read-only, or map root to nobody: os.access cannot tell
        probe = folder / f".zoo-write-check-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ZooError(f"Artifacts folder {folder} is not writable from this machine ({exc.strerror or exc}); "
                           "point ZOO_ARTIFACTS at a shared folder every machine can write.") from None
    return folder
