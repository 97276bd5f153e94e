"""What a registry read returns: ``RunView`` and ``EvaluationView``, and the rules that are computed when a run is
read (is a 'running' run really gone? how long did it take?). No SQL here: queries.py fills these, registry.py
writes rows; both import this module, neither imports the other at module level.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from zoo.vocab import FROM_TAG, GROUP_TAG, STALE

# Stale rule (see stale_reason): heartbeat older than max(STALE_MIN_S, STALE_EPOCHS x the longest epoch).
STALE_MIN_S = 600.0
STALE_EPOCHS = 3.0
STALE_BEFORE_FIRST_EPOCH_S = 3600.0
# A live process with the run's pid that started this long after the run's last heartbeat is another program (pid
# reuse): the run's own process wrote that heartbeat, so it was alive before it.
PID_REUSE_SLACK_S = 5.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill would terminate the process there; rely on the heartbeat instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def process_start(pid: int) -> Optional[datetime]:
    """When process ``pid`` started (naive UTC, to about a second), from /proc; None where that cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            after_name = handle.read().rsplit(b")", 1)[1].split()  # the name itself may hold spaces or ')'
        ticks = int(after_name[19])  # field 22 of proc(5): start time, in clock ticks after boot
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        seconds = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


def stale_reason(row: Any, longest_epoch_s: Optional[float], *, now: datetime, host: str) -> Optional[str]:
    """Why a run recorded as running is really gone, or None while it may still be alive.

    Stale when its process is not alive on this host (a live process with its pid that started after the run's last
    heartbeat is another program: pids are reused), or when its last heartbeat (refreshed every epoch) is older
    than max(10 min, 3 x its longest epoch); before its first epoch ends, older than 1 h and not provably alive here.
    """
    if row.status != "running":
        return None
    same_host = bool(row.host) and row.host == host and bool(row.pid)
    if same_host and not pid_alive(row.pid):
        return f"process {row.pid} is not running on {host}"
    last_sign = row.heartbeat or row.started or row.created  # the run's process wrote this: it was alive then
    if same_host and last_sign is not None:
        began = process_start(row.pid)
        if began is not None and (began - last_sign).total_seconds() > PID_REUSE_SLACK_S:
            return f"process {row.pid} is not running on {host} (its pid belongs to a newer process now)"
    beat = row.heartbeat or row.started or row.created
    age = (now - beat).total_seconds() if beat else 0.0
    if longest_epoch_s:
        limit = max(STALE_MIN_S, STALE_EPOCHS * longest_epoch_s)
    elif same_host:
        return None  # alive, and no epoch has ended yet to say how long one takes
    else:
        limit = STALE_BEFORE_FIRST_EPOCH_S
    if age > limit:
        return f"no heartbeat for {int(age // 60)} min"
    return None


def encode_param(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str, sort_keys=True)


def decode_param(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class EvaluationView:
    id: int
    run_id: int
    created: datetime
    dataset: str
    dataset_fingerprint: Optional[str]
    classes: list[str]
    confusion: Optional[list[list[int]]]
    metrics: dict[str, float]


@dataclass
class RunView:
    """Everything recorded about one run (history aside: ``Registry.history``)."""

    id: int
    uuid: str
    name: Optional[str]
    model: str
    plugin: str
    status: str
    created: datetime
    started: Optional[datetime]
    finished: Optional[datetime]
    heartbeat: Optional[datetime]
    host: Optional[str]
    pid: Optional[int]
    zoo_version: Optional[str]
    torch_version: Optional[str]
    torchvision_version: Optional[str]
    python_version: Optional[str]
    device: Optional[str]
    dataset_path: Optional[str]
    dataset_fingerprint: Optional[str]
    split_fingerprint: Optional[str]
    classes: Optional[list[str]]
    train_size: Optional[int]
    val_size: Optional[int]
    test_size: Optional[int]
    best_epoch: Optional[int]
    epochs_run: Optional[int]
    stop_reason: Optional[str]
    checkpoint: Optional[str]
    error: Optional[str]
    confusion: Optional[list[list[int]]]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Optional[float]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # the user's (--tag); zoo's own are in system_tags
    system_tags: dict[str, str] = field(default_factory=dict)  # zoo.group, zoo.from, zoo.note...
    evaluations: list[EvaluationView] = field(default_factory=list)
    best_val_loss: Optional[float] = None  # lowest val_loss of its history (computed when read)
    stale: Optional[str] = None  # why a 'running' run is really gone (computed when read, never written)

    @property
    def group(self) -> Optional[str]:
        return self.system_tags.get(GROUP_TAG)

    @property
    def parent(self) -> Optional[int]:
        value = self.system_tags.get(FROM_TAG)
        return int(value) if value and value.isdigit() else None

    @property
    def display_status(self) -> str:
        return STALE if self.stale else self.status

    @property
    def duration(self) -> Optional[float]:
        return run_duration(self, utcnow())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.display_status
        data["recorded_status"] = self.status
        data["duration_s"] = self.duration
        data["group"], data["from_run"] = self.group, self.parent
        return data


def run_duration(row: Any, now: datetime) -> Optional[float]:
    """Seconds from start to finish; for a running run up to now, for a stale one up to its last heartbeat."""
    start = row.started or row.created
    if start is None:
        return None
    end = row.finished
    if end is None:
        end = now if row.status == "running" else row.heartbeat
        if getattr(row, "stale", None):
            end = row.heartbeat or start
    return max(0.0, (end - start).total_seconds()) if end else None
