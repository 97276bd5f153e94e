"""Training under torchrun: one process per device, DistributedDataParallel, counts summed over the ranks.

``torchrun --nproc-per-node N -m zoo train ...`` starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK set (and MASTER_ADDR/MASTER_PORT of its key-value store). Each copy plans the same runs, decodes the
images into its own memory and runs the same session; ``process_group`` joins them for the whole command (nccl
for CUDA tensors, gloo for CPU ones). Inside a run:

- ``World.train_share`` / ``World.eval_share``: the positions of an epoch's shuffled train indices (the same
  permutation on every rank) and of the val/test images that this rank handles, disjoint across ranks;
- ``World.wrap``: the model in DistributedDataParallel, which averages the gradients;
- ``World.sum``: loss sums and confusion matrices added over the ranks, so every rank holds the whole split's
  numbers, and the same bits (rank 0's), so early stopping and NaN checks decide the same everywhere;
- only rank 0 records: the other ranks get a ``NullRegistry``, a silent reporter and no checkpoint path.

A run that ends by an exception on any rank ends the command on every rank: the rank posts how its run ended to
the store (``World.settle``), and rank 0, whose own error is then only the echo of it (a closed connection,
torchrun's SIGTERM), records the run ``failed`` with that rank's error. Without torchrun, ``World()`` is rank 0 of
1 and every method leaves things exactly as they were.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterator, Optional

from zoo.errors import ZooError
from zoo.vocab import Status

if TYPE_CHECKING:
    import torch

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Seconds rank 0 waits for the other ranks to say how a run ended, when its own error is an echo. A rank posts
# before it exits, and its exit is what rank 0 notices (a closed connection, torchrun's SIGTERM): the post is
# normally there already; a rank that died without a word (kill -9) costs this wait.
ECHO_WAIT = 1.0
_ECHO_WORDS = ("connection closed", "connection reset", "broken pipe", "gloo", "nccl", "socket", "timed out")


@dataclass(frozen=True)
class World:
    """Where this process stands in a torchrun job: rank ``rank`` of ``size`` (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group for the command, DDP even on one process

    @property
    def is_main(self) -> bool:
        """The rank that records runs, writes checkpoints and prints."""
        return self.rank == 0

    # ------------------------------------------------------------------------------------- what is recorded
    def params(self, batch_size: int, device: str) -> dict[str, Any]:
        """Params recorded beside the run's options under torchrun (none otherwise): ``--batch-size`` is per rank."""
        if not self.launched:
            return {}
        return {"world_size": self.size, "per_rank_batch_size": batch_size, "global_batch_size": batch_size * self.size,
                "dist_backend": "nccl" if device.startswith("cuda") else "gloo"}

    # ------------------------------------------------------------------------------------------- sharding
    def train_share(self, n: int) -> slice:
        """Positions of this rank's share of an epoch's ``n`` shuffled train images: every size-th from ``rank``,
        ``n // size`` of them on every rank (the last ``n % size`` positions sit this epoch out), so all ranks step
        the same number of batches. Without torchrun: all ``n``."""
        return slice(self.rank, (n // self.size) * self.size, self.size)

    def eval_share(self, n: int) -> slice:
        """Positions of this rank's share of ``n`` val or test images (all of them, counted once over the ranks)."""
        return slice(self.rank, n, self.size)

    # ------------------------------------------------------------------------------------ collectives
    def wrap(self, model: "torch.nn.Module", device: "torch.device") -> "torch.nn.Module":
        """The model in DistributedDataParallel under torchrun (its parameters broadcast from rank 0 here); the model
        itself otherwise."""
        if not self.launched:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, values: "torch.Tensor") -> "torch.Tensor":
        """``values`` added over the ranks, as rank 0 computed them (so decisions taken from them agree)."""
        if not self.launched:
            return values
        import torch.distributed as dist

        out = values.clone()
        dist.all_reduce(out)
        dist.broadcast(out, 0)
        return out

    def agree(self, model: "torch.nn.Module") -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank: evaluation and the best weights use rank 0's
        state, which is the one checkpointed."""
        if not self.launched:
            return
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer.data, 0)

    # ------------------------------------------------------------------------------------ ending a run
    def settle(self, key: str, status: Status, error: Optional[str],
               exc: BaseException) -> tuple[Status, Optional[str]]:
        """How the run ``key`` ended for the whole job, when an exception ended it on this rank.

        This rank posts its ending to the store, and from then on ignores Ctrl-C and SIGTERM (torchrun sends
        SIGTERM to every rank once one has failed; the run must be recorded first). When this rank's exception
        is an echo of another rank's end (a closed connection, a signal), rank 0 waits for the other ranks'
        endings and takes the first real one, that rank's error prefixed ``rank N:`` (or, when this rank lost its
        peer in a collective, a peer's own Ctrl-C or SIGTERM, which makes the run 'interrupted')."""
        if not self.launched or self.size == 1:
            return status, error
        _shield()
        echo = is_echo(exc)
        _mailbox().post(key, self.rank, {"status": status.value, "error": error, "echo": echo})
        if not echo or not self.is_main:
            return status, error
        endings = _mailbox().others(key, self.rank, self.size, ECHO_WAIT)
        causes = [(rank, ending) for rank, ending in endings if not ending["echo"]]
        if not causes and not isinstance(exc, KeyboardInterrupt):  # a lost peer, stopped by a signal of its own
            causes = [(rank, ending) for rank, ending in endings if ending["status"] == Status.INTERRUPTED.value]
        for rank, ending in causes[:1]:
            what = ending["error"] or ("Ctrl-C" if ending["status"] == Status.INTERRUPTED.value else "stopped")
            return Status(ending["status"]), f"rank {rank}: {what}"
        return status, error


def is_echo(exc: BaseException) -> bool:
    """Whether ``exc`` is what another rank's end looks like here: a signal, or a collective that lost its peer."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    try:
        from torch.distributed import DistError

        if isinstance(exc, DistError):
            return True
    except ImportError:  # torch before 2.2
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in _ECHO_WORDS)


def from_env(environ: Optional[dict] = None) -> World:
    """This process's place in a torchrun job from RANK, WORLD_SIZE and LOCAL_RANK; ``World()`` when none is set."""
    environ = os.environ if environ is None else environ
    present = [name for name in ENV if environ.get(name, "").strip()]
    if not present:
        return World()
    if len(present) < len(ENV):
        missing = ", ".join(name for name in ENV if name not in present)
        raise ZooError(f"{', '.join(present)} set but not {missing}: start distributed training with "
                       f"`torchrun --nproc-per-node N -m zoo train ...` (or unset {', '.join(present)}).")
    try:
        rank, size, local = (int(environ[name].strip()) for name in ENV)
    except ValueError:
        raise ZooError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (got "
                       f"{', '.join(repr(environ[name]) for name in ENV)}).") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ZooError(f"RANK {rank}, WORLD_SIZE {size}, LOCAL_RANK {local}: need 0 <= RANK < WORLD_SIZE and "
                       f"LOCAL_RANK >= 0.")
    return World(rank, size, local, launched=True)


_current: Optional[World] = None


def current() -> World:
    """The world of the process group in place (``process_group``), else ``World()``: what the engine and the
    pipeline shard and reduce by."""
    return _current or World()


@contextmanager
def process_group(world: World) -> Iterator[World]:
    """Under torchrun, the process group of the whole command (every run of a grid shares it): backend nccl for
    CUDA tensors and gloo for CPU tensors (gloo alone without CUDA); each rank uses cuda:LOCAL_RANK. Without
    torchrun: nothing."""
    global _current, _store
    if not world.launched:
        yield world
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise ZooError(f"This torch ({torch.__version__}) was built without torch.distributed; "
                       f"run zoo without torchrun.")
    cuda = torch.cuda.is_available()
    if cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise ZooError(f"LOCAL_RANK {world.local_rank}, but this machine has {torch.cuda.device_count()} CUDA "
                           f"device(s): start at most that many processes per node (--nproc-per-node).")
        torch.cuda.set_device(world.local_rank)  # 'auto' and 'cuda' now mean cuda:LOCAL_RANK
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=_timeout()))
    _current, _store = world, None
    _mailbox()  # connected now, not when a rank is failing
    try:
        yield world
    finally:
        _current, _store = None, None
        try:
            dist.destroy_process_group()
        except Exception:  # a group whose peers are gone: nothing left to tear down
            pass


def check_device(device: "torch.device", spec: str) -> None:
    """Under torchrun, each rank trains on cuda:LOCAL_RANK or the CPU: another device is a one-line error."""
    world = current()
    if not world.launched:
        return
    if device.type == "cuda" and device.index != world.local_rank:
        raise ZooError(f"--device {spec}: under torchrun each process uses its own GPU, cuda:LOCAL_RANK (here "
                       f"cuda:{world.local_rank}); use --device cuda or auto.")
    if device.type not in ("cuda", "cpu"):
        raise ZooError(f"--device {spec}: torchrun training runs on CUDA GPUs (nccl) or CPUs (gloo); "
                       f"use --device cuda, cpu or auto.")


def _timeout() -> float:
    """Seconds a collective may wait for the other ranks (ZOO_DIST_TIMEOUT, default 30 minutes)."""
    text = os.environ.get("ZOO_DIST_TIMEOUT", "").strip()
    if not text:
        return 1800.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ZooError(f"ZOO_DIST_TIMEOUT={text!r}: give the seconds a rank may wait for the others, e.g. 600.")
    return value


def _shield() -> None:
    """Ignore Ctrl-C and SIGTERM from now on in this process: its run is being recorded and the command ends."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------------ the mailbox


class Mailbox:
    """How each rank's runs ended, in torchrun's key-value store (it outlives a rank that crashed)."""

    def __init__(self, store: Any):
        self.store = store
        # torchrun --max-restarts starts the workers again with the same store: each attempt has its own keys
        self.prefix = f"zoo/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"

    def post(self, key: str, rank: int, ending: dict) -> None:
        self.store.set(f"{self.prefix}/{key}/rank{rank}", json.dumps(ending))

    def others(self, key: str, rank: int, size: int, wait: float) -> list[tuple[int, dict]]:
        """The endings the other ranks posted, in rank order, waiting up to ``wait`` seconds for all of them."""
        keys = {r: f"{self.prefix}/{key}/rank{r}" for r in range(size) if r != rank}
        deadline = time.monotonic() + wait
        while not all(self.store.check([k]) for k in keys.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(r, json.loads(self.store.get(k))) for r, k in keys.items() if self.store.check([k])]


_store: Optional[Mailbox] = None


def _mailbox() -> Mailbox:
    """A client of the store torchrun's agent keeps at MASTER_ADDR:MASTER_PORT (the process group's own store)."""
    global _store
    if _store is None:
        import torch.distributed as dist

        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(seconds=30))
        _store = Mailbox(store)
    return _store


# ------------------------------------------------------------------------------------- ranks that record nothing


class NullRegistry:
    """The registry of a rank other than 0: the same lifecycle calls, nothing written (rank 0 records the run)."""

    def __init__(self) -> None:
        self._ids = 0

    def __enter__(self) -> "NullRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start_run(self, **fields: Any) -> int:
        self._ids += 1
        return self._ids

    def log_epoch(self, run_id: int, epoch: int, values: dict, **fields: Any) -> None:
        pass

    def log_metrics(self, run_id: int, metrics: dict, **fields: Any) -> None:
        pass

    def update_run(self, run_id: int, **fields: Any) -> None:
        pass

    def finish_run(self, run_id: int, status: str, **fields: Any) -> None:
        pass


__all__ = ["ENV", "NullRegistry", "World", "check_device", "current", "from_env", "is_echo", "process_group"]
