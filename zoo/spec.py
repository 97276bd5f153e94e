"""What a run is, typed: ``RunSpec`` (every ``zoo train`` option, defaults defined here once), ``Resolved``
(what 'auto' became on this machine), ``DatasetRecord`` (the data a run saw), and grids of specs.

Standard library only: the CLI, the training service, the store and the read commands all import it for free.

Params rows are written by ``RunSpec.to_params`` alone and read back by ``RunSpec.from_params``; their keys are
the option names of the first release (``data``, ``epochs``, ... ``strict``, plus ``resolved_device`` and
``resolved_precision``), so every registry made since reads the same.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from zoo.errors import ZooError
from zoo.vocab import SYSTEM_TAG_PREFIX

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "nesterov", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
AUGMENTS = ("seed", "light", "strong", "none")

# What a recipe sets when the option is not given. `seed` is the seed report's fine-tuning recipe, bit for bit;
# `scratch` trains a network from random weights (measured in BENCHMARKS.md, "Recipes").
RECIPES: dict[str, dict[str, Any]] = {
    "seed": dict(epochs=30, batch_size=4, lr=0.001, momentum=0.9, weight_decay=0.0, patience=7, optimizer="sgd",
                 schedule="constant", warmup_epochs=0.0, label_smoothing=0.0, augment="seed", hflip=True,
                 bias_decay=True, patience_lr=1.0),
    "scratch": dict(epochs=60, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, patience=15, optimizer="nesterov",
                    schedule="cosine", warmup_epochs=2.0, label_smoothing=0.1, augment="none", hflip=False,
                    bias_decay=False, patience_lr=1.0),
}


def _opt(default: Any, *, minimum: Optional[float] = None, above: Optional[float] = None,
         maximum: Optional[float] = None, choices: tuple = (), grid: bool = True, log: bool = False,
         help: str = "", metavar: str = "", after: str = "", sparse: bool = False) -> Any:
    """A spec field: its default, the limits a value must respect, whether grids (and searches) may vary it,
    whether a search range of it is sampled on a log scale, its help. The command line (zoo.cli.options) makes the
    option from these: ``metavar`` names one value in help (default VALUE), ``after`` lists it right after that
    option instead of in field order (the params rows keep field order). A ``sparse`` option is recorded as a param
    only when it is used (not None, not False), so the rows of runs that do not use it stay as they were."""
    return field(default=default, metadata={"min": minimum, "above": above, "max": maximum, "choices": choices,
                                            "grid": grid, "log": log, "help": help, "metavar": metavar,
                                            "after": after, "sparse": sparse})


@dataclass(frozen=True)
class RunSpec:
    """One run: the architecture and every option of ``zoo train``, as the user gave them ('auto' stays 'auto')."""

    model: str
    data: str = field(metadata={"grid": False, "metavar": "PATH|NAME", "short": "-d",
                                "help": "Image folder (one sub-folder per class) or dataset name (demo, pets)."})
    epochs: Optional[int] = _opt(None, minimum=1, maximum=100_000, help="Maximum epochs (early stopping may end sooner).")
    batch_size: Optional[int] = _opt(None, minimum=1, maximum=1_000_000, help="Images per optimizer step.")
    lr: Optional[float] = _opt(None, above=0.0, maximum=10.0, log=True, help="Peak learning rate.")
    momentum: Optional[float] = _opt(None, minimum=0.0, help="SGD momentum (nesterov too; unused by adamw).")
    weight_decay: Optional[float] = _opt(None, minimum=0.0, maximum=1.0, log=True,
                                        help="Weight decay (decoupled with adamw).")
    patience: Optional[int] = _opt(None, minimum=0, maximum=100_000, help="Epochs without a better validation loss before stopping.")
    min_delta: float = _opt(0.0, minimum=0.0, maximum=1e6, help="Smallest decrease of validation loss that counts.")
    split: str = _opt("8:1:1", metavar="T:V:T", help="train:val:test ratios, stratified by class.")
    image_size: Optional[int] = _opt(None, minimum=1, maximum=8192, metavar="PX",
                                     help="Square input size in px (default: each model's own).")
    seed: int = _opt(42, minimum=-(2**63), maximum=2**63 - 1,
                     help="Seed of the initial weights, the augmentation and the batch order (not the split).")
    pretrained: bool = _opt(False, help="Start from the plugin's weights.")
    weights: Optional[str] = _opt(None, grid=False, help="Start from a local state_dict or zoo checkpoint.")
    device: str = _opt("auto", help="auto, cpu, cuda, cuda:N or mps.")
    workers: Optional[int] = _opt(None, minimum=0, maximum=1024, grid=False,
                                  help="Threads that decode images, and loader processes when images are streamed "
                                       "from disk (default: up to 8).")
    precision: str = _opt("auto", choices=PRECISIONS, help="auto (bf16/fp16 on GPUs, fp32 on CPU), fp32, bf16, fp16.")
    compile: bool = _opt(False, help="torch.compile the model.")
    strict: bool = _opt(False, grid=False, help="Refuse unreadable image files instead of skipping them.")
    # The training recipe: None means "what --recipe gives" (see RECIPES); any value given wins.
    recipe: str = _opt("auto", choices=("auto",) + tuple(("seed", "scratch")),
                       help="auto (seed when fine-tuning with --pretrained/--weights, scratch otherwise), seed, scratch.")
    # optimizer and schedule name registered components (plugins may add more): checked when the run is planned.
    optimizer: Optional[str] = _opt(None, help="sgd, nesterov, adamw, or one a plugin registers.")
    schedule: Optional[str] = _opt(None, help="Learning-rate schedule, stepped per batch: constant, cosine, onecycle, "
                                              "step, or one a plugin registers.")
    warmup_epochs: Optional[float] = _opt(None, minimum=0.0, maximum=100_000, help="Epochs of linear warm-up from lr/25 to lr.")
    label_smoothing: Optional[float] = _opt(None, minimum=0.0, help="Label smoothing of the training loss (0-1).")
    augment: Optional[str] = _opt(None, choices=AUGMENTS,
                                  help="Training augmentation: seed (crop scale 0.08-1 + flip), light (crop scale "
                                       "0.35-1), strong (light + TrivialAugment), none (the eval transform).")
    hflip: Optional[bool] = _opt(None, help="Mirror training images left-right at random (off for text, digits, "
                                           "symbols).")
    bias_decay: Optional[bool] = _opt(None, help="Apply weight decay to biases and norm layers too.")
    split_seed: int = _opt(42, minimum=-(2**63), maximum=2**63 - 1, after="seed",
                           help="Seed of the train/val/test split: runs with the same one share their test images, "
                                "so they can be compared pairwise.")
    patience_lr: Optional[float] = _opt(None, above=0.0, maximum=1.0, metavar="FRACTION", after="patience",
                                        help="Early stopping counts --patience only once the lr has fallen to this "
                                             "fraction of its peak: 1 from the first epoch, 0.5 from the middle of "
                                             "a cosine schedule (a schedule that never decays then runs to --epochs).")
    ema: Optional[float] = _opt(None, above=0.0, sparse=True, metavar="DECAY",
                                help="Keep an exponential moving average of the weights with this decay per step "
                                     "(0.99-0.999): validated, checkpointed and tested with the averaged weights.")
    tta: bool = _opt(False, grid=False, sparse=True,
                     help="Test-time flip: test on the mean of the softmax of each image and its mirror image.")
    # Who the run is, not how it trains: recorded as the run's name and tags, never as params.
    name: Optional[str] = None
    tags: tuple[tuple[str, str], ...] = ()
    parent: Optional[int] = None  # the run `--from` replayed
    # What plugins add (registered names, checked when the run is planned): recorded as params only when used, so
    # the rows of runs that do not use them stay as they were.
    loss: Optional[str] = None  # --loss NAME; None: cross-entropy with the recipe's label smoothing
    callbacks: tuple[str, ...] = ()  # --callback NAME, repeatable
    opts: tuple[tuple[str, Any], ...] = ()  # --opt KEY=VALUE: (key, value) pairs, sorted by key

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.metadata:
                check_value(f.name, getattr(self, f.name))
        if isinstance(self.opts, Mapping):  # a dict is accepted and stored as sorted pairs (hashable)
            object.__setattr__(self, "opts", tuple(sorted(self.opts.items())))
        object.__setattr__(self, "callbacks", tuple(self.callbacks))
        recipe = RECIPES[self.recipe_name]
        optimizer = self.optimizer if self.optimizer is not None else recipe["optimizer"]
        momentum = self.momentum if self.momentum is not None else recipe["momentum"]
        if optimizer == "nesterov" and momentum == 0:
            raise ZooError("--optimizer nesterov needs --momentum above 0 (0.9 is usual).")

    # ------------------------------------------------------------------------------------ params rows
    def to_params(self, resolved: "Resolved") -> dict[str, Any]:
        """The params rows of this run: every option as given, the image size as trained, and what 'auto'
        resolved to (never replayed by --from)."""
        params = {name: getattr(self, name) for name in OPTIONS}
        params.update(self.sparse_params())
        params["image_size"] = resolved.image_size
        params["resolved_device"] = resolved.device
        params["resolved_precision"] = resolved.precision
        params.update(self.plugin_params())
        return params

    def sparse_params(self) -> dict[str, Any]:
        """The sparse options (--ema, --tta) this run uses: recorded only then."""
        return {name: getattr(self, name) for name in SPARSE_OPTIONS if getattr(self, name) not in (None, False)}

    def plugin_params(self) -> dict[str, Any]:
        """The params of what plugins add, only when used: loss, callbacks (comma-joined), opt.KEY per --opt."""
        params: dict[str, Any] = {}
        if self.loss:
            params[LOSS_PARAM] = self.loss
        if self.callbacks:
            params[CALLBACKS_PARAM] = ",".join(self.callbacks)
        params.update({OPT_PREFIX + key: value for key, value in self.opts})
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any], model: str, **overrides: Any) -> "RunSpec":
        """The spec an earlier run's params describe (``replay_values``), with ``overrides`` on top."""
        values = replay_values(params, same_model=overrides.get("model", model) == model)
        values.update(overrides)
        values.setdefault("model", model)
        if values.get("data") is None:
            raise ZooError("The earlier run recorded no --data; pass --data PATH|NAME.")
        return cls(**values)

    # --------------------------------------------------------------------------------- sharing work
    @property
    def data_key(self) -> tuple[str, bool]:
        """Runs with the same key decode their images once, together (the split is cheap and made per run)."""
        return (self.data, self.strict)

    @property
    def split_key(self) -> tuple[str, bool, str, int]:
        """Runs with the same key share one train/val/test split, whatever their --seed: their test predictions
        pair image by image (``zoo compare A B``)."""
        return (self.data, self.strict, self.split, self.split_seed)

    def options(self) -> dict[str, Any]:
        """Every option's value (the params rows' keys), plus what plugins add (loss, callbacks, opt.KEY)."""
        return {**{name: getattr(self, name) for name in OPTIONS}, **self.sparse_params(), **self.plugin_params()}

    # ----------------------------------------------------------------------------------------- recipes
    @property
    def recipe_name(self) -> str:
        """The recipe 'auto' means for this run: fine-tuning (--pretrained or --weights) -> seed, else scratch."""
        if self.recipe != "auto":
            return self.recipe
        return "seed" if (self.pretrained or self.weights) else "scratch"

    def with_recipe(self) -> "RunSpec":
        """Every recipe option filled: the values given stay, the rest come from the recipe (recorded by name)."""
        name = self.recipe_name
        filled = {key: value for key, value in RECIPES[name].items() if getattr(self, key) is None}
        return replace(self, recipe=name, **filled)


LOSS_PARAM, CALLBACKS_PARAM, OPT_PREFIX = "loss", "callbacks", "opt."

# The option fields: params keys, in the order of the first release's rows; the sparse ones are recorded only when
# used.
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunSpec) if f.metadata and not f.metadata.get("sparse"))
SPARSE_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunSpec) if f.metadata.get("sparse"))
ALL_OPTIONS = OPTIONS + SPARSE_OPTIONS  # every option a command line, a grid or --from may set
GRID_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunSpec) if f.metadata.get("grid"))
RESOLVED_KEYS = ("resolved_device", "resolved_precision")
_FIELDS = {f.name: f for f in fields(RunSpec)}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "Optional[int]": int, "Optional[str]": str,
          "Optional[float]": float, "Optional[bool]": bool}


def default(name: str) -> Any:
    """The default of option ``name`` (the one place it is defined); None for a required one."""
    value = _FIELDS[name].default
    return None if value is MISSING else value


def help_of(name: str) -> str:
    return _FIELDS[name].metadata.get("help", "")


def metadata(name: str) -> Mapping[str, Any]:
    """Everything option ``name`` declares (limits, grid, help, metavar...): what its command-line option is made of."""
    return _FIELDS[name].metadata


def log_scale(name: str) -> bool:
    """Whether a search range of option ``name`` is sampled on a log scale (``zoo tune --lr 1e-4..1e-1``)."""
    return bool(_FIELDS[name].metadata.get("log"))


def option_text(value: Any) -> str:
    """A value as typed on the command line (true/false, floats in full)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def kind(name: str) -> type:
    return _TYPES[str(_FIELDS[name].type)]


def check_value(name: str, value: Any) -> None:
    """A one-line ZooError when ``value`` is outside option ``name``'s limits."""
    if value is None:
        return
    meta = _FIELDS[name].metadata
    flag = option_flag(name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ZooError(f"{flag} {value}: must be a finite number.")
    if meta.get("min") is not None and value < meta["min"]:
        raise ZooError(f"{flag} {value}: must be at least {meta['min']}.")
    if meta.get("above") is not None and value <= meta["above"]:
        raise ZooError(f"{flag} {value}: must be greater than {meta['above']:g}.")
    if meta.get("max") is not None and value > meta["max"]:
        raise ZooError(f"{flag} {value}: must be at most {meta['max']:,}.")
    if name == "label_smoothing" and value >= 1:
        raise ZooError(f"{flag} {value}: must be below 1 (0.1 is usual).")
    if name == "momentum" and value >= 1:
        raise ZooError(f"{flag} {value}: must be below 1 (0.9 is usual).")
    if name == "ema" and value >= 1:
        raise ZooError(f"{flag} {value}: must be below 1 (0.99-0.999 are usual).")
    if meta.get("choices") and str(value).lower() not in meta["choices"]:
        raise ZooError(f"{flag} '{value}' is not one of {', '.join(meta['choices'])}.")


def convert(name: str, text: Any) -> Any:
    """One value of option ``name`` from text (or from TOML, already typed), checked; a one-line error if bad."""
    flag, want = option_flag(name), kind(name)
    if isinstance(text, str):
        text = text.strip()
        if text == "":
            raise ZooError(f"{flag}: an empty value; give a value or leave the option out.")
    try:
        if want is bool:
            if isinstance(text, bool):
                value: Any = text
            elif str(text).lower() in ("true", "yes", "1", "on"):
                value = True
            elif str(text).lower() in ("false", "no", "0", "off"):
                value = False
            else:
                raise ValueError
        elif want is int:
            if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
                raise ValueError
            value = int(text) if not isinstance(text, str) else int(text, 10)
        elif want is float:
            if isinstance(text, bool):
                raise ValueError
            value = float(text)
        else:
            if not isinstance(text, str):
                raise ValueError
            value = text
    except (TypeError, ValueError):
        what = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[want]
        raise ZooError(f"{flag} {text!r}: not {what}.") from None
    if want is str and name in ("precision", "device", "recipe", "optimizer", "schedule", "augment"):
        value = value.lower()
    check_value(name, value)
    return value


def parse_list(name: str, texts: Iterable[str]) -> list[Any]:
    """Values of a repeatable, comma-separated option (``--lr 0.1,0.01 --lr 0.5``), in order, duplicates kept
    once. More than one value makes the option a grid axis."""
    raw = [part for text in texts for part in str(text).split(",")]
    if len(raw) > 1 and name not in GRID_OPTIONS:
        raise ZooError(f"{option_flag(name)} takes one value; grids vary "
                       f"{', '.join(option_flag(n) for n in GRID_OPTIONS)}.")
    return list(dict.fromkeys(convert(name, part) for part in raw))


def seed_series(given: Optional[list[int]], count: int) -> list[int]:
    """``--seeds N``: N seeds counted up from the one --seed gives (42 by default): 42, 43, 44 for --seeds 3."""
    if count < 1:
        raise ZooError(f"--seeds {count}: must be at least 1 (3 or more give a mean with an interval).")
    if given and len(given) > 1:
        raise ZooError("--seeds N counts up from one --seed; give either --seed A,B,C or --seeds N, not both.")
    start = given[0] if given else default("seed")
    return [start + i for i in range(count)]


def replay_values(params: Mapping[str, Any], *, same_model: bool) -> dict[str, Any]:
    """Option values of an earlier run's params, to start a new run from (``--from RUN``).

    Left out: the image size when the new run uses another architecture (it gets its own default size), and
    device/precision of runs recorded before ``resolved_*`` had keys of their own: those rows hold the resolved
    values (cuda:0, bf16), which must not be replayed on another machine."""
    legacy = not any(key in params for key in RESOLVED_KEYS)
    values: dict[str, Any] = {} if "recipe" in params else {"recipe": "seed"}  # before recipes: the seed one
    values["split_seed"] = split_seed_of(params)  # before --split-seed, --seed chose the split too
    if "recipe" in params and "patience_lr" not in params:  # before --patience-lr: patience counted from epoch 1
        values["patience_lr"] = 1.0
    for name in ALL_OPTIONS:
        if name not in params:
            continue
        if name == "image_size" and not same_model:
            continue
        if name in ("device", "precision") and legacy:
            continue
        values[name] = params[name]
    values.update(plugin_values(params))
    return values


def split_seed_of(params: Mapping[str, Any]) -> int:
    """The seed that chose a recorded run's split: ``split_seed``, or for runs recorded before it existed their
    ``seed`` (which then chose the split too), so their split stays what it was."""
    value = params.get("split_seed", params.get("seed"))
    return default("split_seed") if value is None else int(value)


def plugin_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """``loss``, ``callbacks`` and ``opts`` of RunSpec from params rows (or a grid's keys: opt.KEY)."""
    values: dict[str, Any] = {}
    if params.get(LOSS_PARAM):
        values["loss"] = str(params[LOSS_PARAM])
    if params.get(CALLBACKS_PARAM):
        raw = params[CALLBACKS_PARAM]
        values["callbacks"] = tuple(raw.split(",") if isinstance(raw, str) else raw)
    options = {k[len(OPT_PREFIX):]: v for k, v in params.items() if k.startswith(OPT_PREFIX)}
    if options:
        values["opts"] = tuple(sorted(options.items()))
    return values


def parse_opt_value(text: Any) -> Any:
    """A ``--opt`` value: a bool, int or float when it reads as one, else the text."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind_ in (int, float):
        try:
            return kind_(text.strip())
        except ValueError:
            pass
    return text.strip()


def parse_opts(texts: Iterable[str]) -> dict[str, list[Any]]:
    """``--opt KEY=VALUE[,VALUE...]`` (repeatable) -> {"opt.KEY": values}; more than one value is a grid axis."""
    axes: dict[str, list[Any]] = {}
    for text in texts:
        key, sep, value = str(text).partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ZooError(f"--opt {text!r}: give KEY=VALUE (e.g. --opt beta1=0.95).")
        values = axes.setdefault(OPT_PREFIX + key, [])
        values.extend(v for v in map(parse_opt_value, value.split(",")) if v not in values)
    return axes


# ------------------------------------------------------------------------------------ resolved, dataset


@dataclass(frozen=True)
class Resolved:
    """What a spec's 'auto' values became on this machine, for this model."""

    device: str  # torch.device text: cpu, cuda:0, mps
    precision: str  # fp32 | bf16 | fp16
    image_size: int


@dataclass(frozen=True)
class DatasetRecord:
    """The data a run trained on: where, which files (fingerprint), which split, which classes, how many."""

    path: str
    fingerprint: str
    split_fingerprint: str
    classes: tuple[str, ...]
    train_size: int
    val_size: int
    test_size: int
    name: Optional[str] = None  # a dataset plugin's name (demo, pets), None for a folder

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["classes"] = list(self.classes)
        return row


# ------------------------------------------------------------------------------------------------ grids


def expand(base: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``axes`` (option -> values) over ``base``, the first axis varying slowest."""
    names = list(axes)
    combos = itertools.product(*(axes[n] for n in names)) if names else [()]
    return [{**base, **dict(zip(names, combo))} for combo in combos]


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ZooError(f"--grid file '{path}' does not exist.") from None
    except OSError as exc:
        raise ZooError(f"--grid file '{path}' cannot be read: {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"--grid file '{path}' is not valid TOML: {exc}.") from None


GRID_KEYS = ("model",) + ALL_OPTIONS + ("name", LOSS_PARAM, CALLBACKS_PARAM)
MAX_RUNS = 1000  # runs one command makes without --max-runs


def _typed(where: str, key: str, value: Any, *, many: bool) -> list[Any]:
    """A TOML value of ``key`` -> the list of typed values it stands for."""
    name = _name(key)
    if name not in GRID_KEYS and not name.startswith(OPT_PREFIX):
        raise ZooError(f"{where}: unknown key '{key}'; use one of {', '.join(GRID_KEYS)} or opt.KEY.")
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise ZooError(f"{where}: '{key}' takes one value here, not a list; put lists in [grid].")
    if not values:
        raise ZooError(f"{where}: '{key}' is an empty list; give at least one value.")
    if name.startswith(OPT_PREFIX):
        return list(dict.fromkeys(parse_opt_value(v) for v in values))
    if name in ("model", "name", LOSS_PARAM, CALLBACKS_PARAM):
        bad = [v for v in values if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ZooError(f"{where}: '{key}' must be text, not {bad[0]!r}.")
        return [v.strip() for v in values]
    try:
        return list(dict.fromkeys(convert(name, v) for v in values))
    except ZooError as exc:
        raise ZooError(f"{where}: {exc}") from None


def parse_grid(path: Path) -> list[dict[str, Any]]:
    """Runs described by a TOML grid file, as option dicts (typed and checked):

    - ``[base]`` (options every run shares) plus ``[grid]`` (option -> list of values, expanded as a cartesian
      product), or
    - ``[[runs]]`` tables, one per run (on top of ``[base]``), for grids that are not a product.

    ``model`` (or ``models``) may appear like any option; unknown keys and empty lists are one-line errors."""
    doc = _load_toml(path)
    for table in [doc.get("base"), doc.get("grid"), *(doc.get("runs") or [])]:
        if isinstance(table, dict) and isinstance(table.get("opt"), dict):  # opt.KEY = ... is a nested table
            table.update({OPT_PREFIX + k: v for k, v in table.pop("opt").items()})
    unknown = set(doc) - {"base", "grid", "runs"}
    if unknown:
        raise ZooError(f"--grid {path}: unknown table '{sorted(unknown)[0]}'; use [base], [grid] or [[runs]].")
    if "grid" in doc and "runs" in doc:
        raise ZooError(f"--grid {path}: give either [grid] (a product) or [[runs]] (a list), not both.")
    base: dict[str, Any] = {}
    for key, value in doc.get("base", {}).items():
        base[_name(key)] = _typed(f"--grid {path} [base]", key, value, many=False)[0]
    if "runs" in doc:
        runs = doc["runs"]
        if not isinstance(runs, list) or not runs:
            raise ZooError(f"--grid {path}: [[runs]] is empty; add at least one run.")
        out = []
        for i, run in enumerate(runs, 1):
            values = {_name(k): _typed(f"--grid {path} run {i}", k, v, many=False)[0] for k, v in run.items()}
            out.append({**base, **values})
        return out
    axes = {_name(k): _typed(f"--grid {path} [grid]", k, v, many=True) for k, v in doc.get("grid", {}).items()}
    if not axes and not base:
        raise ZooError(f"--grid {path}: no runs; give [base] and [grid] tables, or [[runs]].")
    return expand(base, axes)


def config_defaults(table: Mapping[str, Any], sources: Mapping[str, Any]) -> dict[str, Any]:
    """The [train] table of zoo.toml as option values (typed and checked; one line naming the file if bad)."""
    out = {}
    for key, value in table.items():
        where = f"{sources.get(f'train.{key}', 'zoo.toml')} [train]"
        if _name(key) in ("model", "name"):
            raise ZooError(f"{where}: '{key}' is not a default; name models on the command line.")
        out[_name(key)] = _typed(where, key, value, many=False)[0]
    return out


def _name(key: str) -> str:
    if key.startswith(OPT_PREFIX):
        return key
    name = key.replace("-", "_")
    return "model" if name == "models" else name


def check_tags(tags: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """User tags may not use zoo's own namespace; keys and values have at most MAX_TAG characters."""
    tags = tuple(tags)
    for key, value in tags:
        if key.startswith(SYSTEM_TAG_PREFIX):
            raise ZooError(f"--tag {key}: tags starting with '{SYSTEM_TAG_PREFIX}' are zoo's own; pick another key.")
        for what, text in (("key", key), ("value", value)):
            if len(text) > MAX_TAG:
                raise ZooError(f"A tag {what} has at most {MAX_TAG} characters (this one has {len(text)}); "
                               f"put long text in a note (zoo note RUN TEXT).")
    return tags


MAX_TAG = 200  # characters of a tag key or value, as of a run name


def varied(specs: list[RunSpec]) -> list[str]:
    """The fields whose values differ between specs (model first), in field order: the columns of a plan."""
    if len(specs) < 2:
        return []
    names = ["model", *ALL_OPTIONS, "loss", "callbacks", "opts"]
    return [n for n in names if len({repr(getattr(s, n)) for s in specs}) > 1]


__all__ = ["RunSpec", "Resolved", "DatasetRecord", "OPTIONS", "SPARSE_OPTIONS", "ALL_OPTIONS", "GRID_OPTIONS", "default", "convert", "parse_list",
           "expand", "parse_grid", "replay_values", "varied", "check_tags", "replace"]


def build_specs(*, models: list[str], axes: Mapping[str, list[Any]], rows: Optional[list[dict[str, Any]]] = None,
                base: Optional[Mapping[str, Any]] = None, source_model: Optional[str] = None,
                defaults: Optional[Mapping[str, Any]] = None,
                name: Optional[str] = None, tags: tuple[tuple[str, str], ...] = (),
                parent: Optional[int] = None, max_runs: Optional[int] = None) -> list[RunSpec]:
    """Every run of one command, in order: each row of a grid file (or one empty row) times the product of the
    command line's values (models first), on top of ``base`` (an earlier run's values for --from).

    The earlier run's image size is kept only for runs of its own architecture (``source_model``). ``defaults``
    (zoo.toml's [train]) sit under everything else."""
    base = dict(base or {})
    source_size = base.pop("image_size", None)
    command_axes = ({"model": list(dict.fromkeys(models))} if models else {}) | dict(axes)
    count = len(rows or [{}]) * math.prod(len(values) for values in command_axes.values())
    limit = MAX_RUNS if max_runs is None else max_runs
    if count > limit:  # counted before the product is made: a typo of 100 x 100 x 100 values costs nothing
        raise ZooError(f"This command makes {count:,} runs, more than --max-runs {limit:,}: pass --max-runs "
                       f"{count} to train (or queue) them all, or give fewer values.")
    specs = []
    for row in rows or [{}]:
        for values in expand({**(defaults or {}), **base, **row}, command_axes):
            if not values.get("model"):
                raise ZooError("Name at least one model to train (`zoo models` lists them), or rerun one with "
                               "--from RUN.")
            if values.get("data") is None:
                raise ZooError("--data is required: an image folder with one sub-folder per class, or a dataset "
                               "name such as demo.")
            if values.get("image_size") is None and source_size is not None and values["model"] == source_model:
                values["image_size"] = source_size
            run_name = values.pop("name", None) or name
            plugin = plugin_values({k: values.pop(k) for k in list(values)
                                    if k.startswith(OPT_PREFIX) or k == CALLBACKS_PARAM})
            if "opts" in plugin:  # --opt on top of an earlier run's (--from) or the grid file's
                plugin["opts"] = tuple(sorted({**dict(values.get("opts", ())), **dict(plugin["opts"])}.items()))
            values.update(plugin)
            specs.append(RunSpec(**values, name=run_name, tags=tags, parent=parent))
    return specs
