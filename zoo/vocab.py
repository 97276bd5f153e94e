"""The words that cross layers: run statuses, stop reasons, history keys and the metric-key grammar.

The engine writes them, the store records them and rendering reads them; each is spelled here once. Standard
library only, so the read commands import it for free.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Sequence


class Status(str, Enum):
    """A run's recorded status. 'stale' is not one: it is how a 'running' run whose process is gone reads."""

    QUEUED = "queued"  # recorded by `zoo train --queue`, waiting for a `zoo worker` to claim it
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"  # stopped early by `zoo tune`'s pruner: a hopeless trial; its history stays

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED, Status.PRUNED)
STALE = "stale"  # shown for a running run that is really gone (computed when read, never written)
DISPLAY_STATUSES = (Status.QUEUED.value, Status.RUNNING.value, STALE, Status.COMPLETED.value, Status.FAILED.value,
                    Status.INTERRUPTED.value, Status.PRUNED.value)


class StopReason(str, Enum):
    """Why a run's training ended."""

    EARLY_STOP = "early_stop"  # validation loss stopped improving for `patience` epochs
    MAX_EPOCHS = "max_epochs"
    NAN_LOSS = "nan_loss"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, closed output
    ERROR = "error"  # an exception: the run's error says which
    PRUNED = "pruned"  # `zoo tune`'s pruner stopped a trial whose validation metric lagged the others

    def __str__(self) -> str:
        return self.value


# ------------------------------------------------------------------------------------- history (per epoch)

TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC = "train_loss", "train_acc", "val_loss", "val_acc"
LR, SECONDS, IMAGES_PER_SEC = "lr", "seconds", "images_per_sec"
HISTORY_KEYS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, LR, SECONDS, IMAGES_PER_SEC)
LOSS_KEYS = (TRAIN_LOSS, VAL_LOSS)

# ------------------------------------------------------------------------------------ metrics (per run)

TEST = "test_"  # prefix of the final test metrics: test_accuracy, test_f1, test_f1/<class>
ACCURACY, LOSS, PRECISION, RECALL, F1 = "accuracy", "loss", "precision", "recall", "f1"
PER_CLASS = (PRECISION, RECALL, F1)  # recorded per class as <prefix><metric>/<class>, and as a macro mean
OVERALL = (ACCURACY, F1, PRECISION, RECALL, LOSS)  # the order tables show them in
CLASS_SEPARATOR = "/"


def metric_key(metric: str, cls: Optional[str] = None, prefix: str = TEST) -> str:
    """'f1' -> 'test_f1'; ('f1', 'cat') -> 'test_f1/cat'."""
    return f"{prefix}{metric}" if cls is None else f"{prefix}{metric}{CLASS_SEPARATOR}{cls}"


def split_metric_key(key: str) -> tuple[str, Optional[str]]:
    """'test_f1/cat' -> ('test_f1', 'cat'); 'test_f1' -> ('test_f1', None). Class names may hold '/'."""
    base, sep, cls = key.partition(CLASS_SEPARATOR)
    return (base, cls) if sep else (key, None)


def is_per_class(key: str) -> bool:
    return CLASS_SEPARATOR in key


METRIC_ORDER = tuple(metric_key(m) for m in OVERALL)  # test_accuracy, test_f1, ...: the order tables show them in

NO_DIRECTIONS: Mapping[str, bool] = MappingProxyType({})


def lower_is_better(key: str, directions: Mapping[str, bool] = NO_DIRECTIONS) -> bool:
    """Whether a smaller value of metric ``key`` ranks first. ``directions``: recorded keys of registered metrics
    -> their ``higher_is_better`` (``zoo.components.metric_directions``); other keys go by their name."""
    base = split_metric_key(key)[0]
    if base in directions:
        return not directions[base]
    name = base.lower()
    return LOSS in name or "error" in name or name.endswith("_err")


def metric_order(keys: Iterable[str], registered: Sequence[str] = ()) -> list[str]:
    """Metric keys in display order: zoo's own (METRIC_ORDER), then registered metrics' in registration order,
    then the rest by name."""
    keys = set(keys)
    preferred = list(dict.fromkeys((*METRIC_ORDER, *registered)))
    return [k for k in preferred if k in keys] + sorted(keys - set(preferred))


# ------------------------------------------------------------------------------------------ system tags

SYSTEM_TAG_PREFIX = "zoo."  # tags zoo itself writes; --tag refuses them
GROUP_TAG = "zoo.group"  # every run of one `zoo train` command (or grid) shares it
FROM_TAG = "zoo.from"  # the run `--from RUN` replayed: lineage
STUDY_TAG = "zoo.study"  # the `zoo tune` study a run is a trial of
TRIAL_TAG = "zoo.trial"  # its trial number in that study (Optuna's, from 0)
NOTE_TAG = "zoo.note"  # `zoo note RUN TEXT` keeps the note as this tag (as MLflow's mlflow.note.content)
