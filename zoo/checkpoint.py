"""Checkpoints: the best weights of a run, and weights given with ``--weights FILE``.

A zoo checkpoint is ``torch.save`` of a plain dict (loadable with ``torch.load(path, weights_only=True)``)::

    {"format": "zoo-checkpoint", "version": 1, "model": name, "plugin": plugin, "num_classes": n,
     "classes": [...], "image_size": px, "state_dict": {...}, "epoch": best_epoch, "mean": [...], "std": [...],
     "interpolation": "bilinear" | "bicubic", "crop_fraction": 0.875}   (the last two: zoo.preprocess.Preprocess)
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from zoo.errors import ZooError

if TYPE_CHECKING:
    from torch import nn

FORMAT = "zoo-checkpoint"
VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile wrappers


def save_checkpoint(path: Path, *, model: str, plugin: str, classes: list[str], image_size: int,
                    state_dict: dict, epoch: int, mean, std, interpolation: str = "bilinear",
                    crop_fraction: float = 0.875) -> Path:
    """Write atomically (temporary file, then rename), so a crash never leaves half a checkpoint."""
    payload = {"format": FORMAT, "version": VERSION, "model": model, "plugin": plugin, "num_classes": len(classes),
               "classes": list(classes), "image_size": int(image_size),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "epoch": int(epoch),
               "mean": [float(m) for m in mean], "std": [float(s) for s in std],
               "interpolation": interpolation, "crop_fraction": float(crop_fraction)}
    return atomic_save(payload, path)


@contextmanager
def signals_after() -> Iterator[None]:
    """Ctrl-C and SIGTERM are noted inside the block and handled once it is done: while a checkpoint is written
    (raised inside torch's zip writer, a KeyboardInterrupt comes out as a RuntimeError ('unexpected pos'), which
    would record an interrupted run as failed), and around an epoch's end (its checkpoints and its recorded history
    are one step). Nested blocks hand a noted signal to the outer one."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    caught: list[tuple[int, Any]] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append((signum, frame))) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    for signum, frame in caught[:1]:  # the file is whole: now the signal does what it would have done
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler in (signal.SIG_DFL, None):
            signal.raise_signal(signum)


def atomic_save(payload: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename: a crash never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # zoo opens (and always closes) the file itself: a file still open when unlinked keeps its space, which
        # on a full disk is the space the registry needs to record why the run failed.
        with signals_after():
            with open(tmp, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None:
            raise ZooError(f"Cannot write checkpoint {path}: {cause.strerror or cause}.") from exc
        raise
    return path


LAST_FORMAT = "zoo-last"


def load_last(path: Path) -> dict:
    """A run's ``last.pt`` (what resuming needs: weights, optimizer, schedule, RNG and early-stopping state)."""
    data = _load(path, "a zoo resume file")
    if not isinstance(data, dict) or data.get("format") != LAST_FORMAT:
        raise ZooError(f"'{path}' is not a zoo resume file (last.pt); the run cannot be resumed.")
    return data


def _os_error(exc: BaseException) -> Optional[OSError]:
    """The OSError behind a failed write (torch reports a full disk as a RuntimeError caused by it), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class CorruptFile(ZooError):
    """A file that is not a readable PyTorch file at all (truncated, overwritten, random bytes)."""


def _load(path: Path, what: str = "a PyTorch state_dict or a zoo checkpoint") -> Any:
    import pickle
    import warnings

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"Weights file '{path}' does not exist.")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols and formats: not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if not reason.startswith("Unsupported global") and not _pickle_header(path):  # damaged bytes
            raise CorruptFile(f"'{path}' is corrupt (not {what}: {reason}): delete it or restore it from a "
                              f"good copy.") from None
        # torch's message advises retrying with weights_only=False, which runs any code the file holds: zoo
        # never does that, so it names only what the file holds that plain weights do not.
        raise ZooError(f"Cannot load '{path}' as weights: it is a pickle that torch's safe loader refuses "
                       f"({reason}). zoo reads only a PyTorch state_dict or a zoo checkpoint "
                       f"saved with torch.save, and never runs code from a weights file.") from None
    except OSError as exc:
        raise ZooError(f"Cannot read '{path}': {exc.strerror or exc}.") from None
    except Exception as exc:  # a truncated archive, an empty file, bytes of something else
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". This is an internal")[0]
        raise CorruptFile(f"'{path}' is corrupt (not {what}: {type(exc).__name__}: {first[:200]}): delete it or "
                          f"restore it from a good copy.") from None


def _pickle_header(path: Path) -> bool:
    """Whether the file starts as a pickle (PROTO 2-5) does: a raw pickle, not damaged bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _unpickler_reason(exc: BaseException) -> str:
    """What torch's weights_only loader refused ('Unsupported global: GLOBAL x.y'), without its advice."""
    text = str(exc)
    if "WeightsUnpickler error:" not in text:
        return "not plain weights"
    after = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
    reason = after[0].split(". ")[0] if after else ""
    return reason.replace(" was not an allowed global by default", "").rstrip(".")[:200] or "not plain weights"


def load_checkpoint(path: Path) -> dict:
    """A zoo checkpoint dict; anything else is a ZooError naming the file."""
    data = _load(path, "a zoo checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ZooError(f"'{path}' is not a zoo checkpoint (no 'format': '{FORMAT}' entry).")
    if data.get("version", 0) > VERSION:
        raise ZooError(f"Checkpoint '{path}' has version {data.get('version')}; this zoo reads up to {VERSION}. "
                       f"Upgrade zoo.")
    return data


def state_dict_of(data: Any, path: Path) -> dict:
    """The tensors of a raw state_dict or of a zoo checkpoint, with wrapper prefixes removed."""
    import torch

    if isinstance(data, dict) and data.get("format") == FORMAT:
        data = data["state_dict"]
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict):  # e.g. Lightning-style files
        data = data["state_dict"]
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise ZooError(f"'{path}' holds no state_dict (a dict of tensors) and is not a zoo checkpoint.")
    out = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_weights(model: "nn.Module", path: Path, model_name: str = "the model") -> tuple[int, list[str]]:
    """Copy every tensor of ``path`` whose name and shape fit ``model``; returns (loaded, skipped messages).

    Tensors whose shape does not fit (typically the classifier, trained for another number of classes) are
    skipped; a file with no tensor that fits at all is an error."""
    source = state_dict_of(_load(path), Path(path))
    target = model.state_dict()
    fits, skipped = {}, []
    for key, value in source.items():
        if key not in target:
            continue
        if tuple(value.shape) != tuple(target[key].shape):
            have = "x".join(map(str, value.shape)) or "scalar"
            want = "x".join(map(str, target[key].shape)) or "scalar"
            skipped.append(f"{key} ({have} in the file, {want} in {model_name})")
            continue
        fits[key] = value
    if not fits:
        raise ZooError(f"No tensor in '{path}' fits {model_name} (names or shapes differ); is it a file for "
                       f"this architecture?")
    model.load_state_dict(fits, strict=False)
    return len(fits), skipped


def build_from_checkpoint(path: Path, *, plugins=None) -> tuple["nn.Module", dict]:
    """The trained model of a zoo checkpoint (eval mode, CPU) and the checkpoint dict (for evaluate/predict)."""
    data = load_checkpoint(path)
    if plugins is None:
        from zoo.plugins import get_plugins

        plugins = get_plugins()
    from zoo.errors import UnknownName

    try:
        info = plugins.models().get(data["model"])
    except UnknownName:  # not a typo to correct: the plugin that registered it is missing
        raise ZooError(plugins.missing_model(data["model"], data.get("plugin"))) from None
    model = info.build(data["num_classes"], pretrained=False)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ZooError(f"Checkpoint '{path}' does not fit model '{data['model']}' as registered now: "
                       f"{str(exc).splitlines()[0][:200]}") from None
    return model.eval(), data


def describe_skipped(skipped: list[str], path: Optional[Path] = None) -> str:
    where = f" of '{path}'" if path else ""
    return f"Skipped {len(skipped)} tensor(s){where} whose shape does not fit: {', '.join(skipped)}."
