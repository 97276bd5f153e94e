"""Image folders: scan and verify, fingerprint, split, decode once into memory, and feed batches.

The flow for one ``zoo train`` command:

1. ``resolve_data("demo" | "./images")`` -> the ImageFolder directory (a registered dataset is prepared in the cache).
2. ``load_images(root, ...)`` lists every file once, checks it decodes (bad files are listed and skipped, or
   refused with ``strict``), fingerprints the set, and -- when it fits the memory budget -- keeps each image
   decoded as uint8 at a bounded resolution (the central square, ``cache_side`` px).
3. ``split_samples(...)`` assigns files to train/val/test, stratified by class and seeded.
4. ``make_pipeline(images, split, image_size, ...)`` gives the engine normalised batches: random resized crops and
   flips made in batched tensor form from the in-memory cache (on the GPU when training there), or read from disk
   by DataLoader workers when the images did not fit in memory. Validation and test images are prepared once,
   deterministically (resize + centre crop).

Steps 1-3 are shared by every model trained in the command; only step 4 depends on the model's image size.
torch is imported lazily so that the data checks stay cheap to import.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import random
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from zoo.config import cache_root  # noqa: F401 (re-exported)
from zoo.distributed import World
from zoo.errors import LoaderStopped, ZooError, printable
from zoo.preprocess import EVAL_CROP, IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Preprocess  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch

    from zoo.spec import DatasetRecord

MAX_CACHE_SIDE = 512  # the in-memory copy never keeps more than 512 x 512 px per image
CROP_SCALE = (0.08, 1.0)  # random resized crop: area fraction and aspect ratio range (torchvision's defaults)
CROP_RATIO = (3 / 4, 4 / 3)
PARTS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------- finding data


def resolve_data(data: str) -> tuple[Path, Optional[str]]:
    """``--data`` value -> (ImageFolder directory, dataset name or None). A directory wins over a dataset name."""
    path = Path(data).expanduser()
    if path.is_dir():
        if not _is_utf8(str(path.resolve())):
            raise ZooError(f"The path of --data '{printable(path.resolve())}' is not valid UTF-8, so it cannot be "
                           f"recorded in the registry; rename the folder.")
        return path.resolve(), None
    from zoo.plugins import get_plugins

    datasets = get_plugins().datasets()
    info = datasets.find(data)  # case-insensitive, like model names: --data DEMO is the dataset demo
    if info is not None:
        root = info.prepare(cache_root() / "datasets" / info.name)
        return Path(root).resolve(), info.name
    if path.exists():
        raise ZooError(f"--data '{data}' is a file, not a directory; pass a folder with one sub-folder per class.")
    names = datasets.names()
    known = f" Registered datasets: {', '.join(names)}." if names else ""
    raise ZooError(f"Data directory '{data}' does not exist and is not a registered dataset.{known} "
                   f"Pass an image folder with one sub-folder per class.")


# --------------------------------------------------------------------------------------------- scan + verify


def class_counts(classes: list[str], labels) -> dict[str, int]:
    """Images per class name (every class present, zero included) from an iterable of labels."""
    counts = {c: 0 for c in classes}
    for label in labels:
        counts[classes[label]] += 1
    return counts


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the root, with '/' separators
    label: int
    size: int  # bytes on disk


@dataclass
class ImageSet:
    """The verified images of a folder, in sorted order, plus (when it fits in memory) their decoded pixels."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[str, str]]  # (relative path, reason) of files that could not be read
    fingerprint: str
    cache: Optional["torch.Tensor"] = None  # uint8 [N, 3, S, S] channels_last, samples' order; None = stream
    cache_side: int = 0

    def counts(self) -> dict[str, int]:
        return class_counts(self.classes, (s.label for s in self.samples))


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os.fsdecode keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "not a regular file"


def _list_files(root: Path) -> tuple[list[str], list[tuple[str, int, int]], list[tuple[str, str]]]:
    """(classes, [(relative path, label, size)], [(relative path, why skipped)]) for an ImageFolder tree.

    Hidden files and folders are ignored. Only regular files (or symlinks to them) are listed: broken and looping
    symlinks, named pipes, sockets and devices are skipped without being opened, and so are names that are not
    valid UTF-8 (a folder with such a name is skipped whole). Symlinked folders are followed, except one that
    leads back to a folder above it."""
    classes, skipped = [], []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or not p.is_dir():
            continue
        if _is_utf8(p.name):
            classes.append(p.name)
        else:
            skipped.append((p.name + "/", "folder name is not valid UTF-8"))
    files = []
    for label, cls in enumerate(classes):
        top = root / cls
        # (folder, its path relative to root, the (device, inode) of it and every folder above it)
        stack = [(top, cls, frozenset({_inode(top.stat())}))]
        while stack:
            folder, rel_folder, above = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                skipped.append((rel_folder + "/", f"cannot list the folder: {exc.strerror or exc}"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = f"{rel_folder}/{entry.name}"
                if not _is_utf8(entry.name):
                    skipped.append((rel, "name is not valid UTF-8"))
                    continue
                try:
                    info = entry.stat()  # follows symlinks
                except OSError as exc:
                    skipped.append((rel, _stat_problem(exc, entry.is_symlink())))
                    continue
                if stat.S_ISDIR(info.st_mode):
                    if _inode(info) in above:
                        skipped.append((rel + "/", "symlink loop: it leads back to a folder above it"))
                    else:
                        stack.append((Path(entry.path), rel, above | {_inode(info)}))
                elif stat.S_ISREG(info.st_mode):
                    files.append((rel, label, info.st_size))
                else:
                    skipped.append((rel, f"{_kind(info.st_mode)}, not a regular file"))
    files.sort(key=lambda f: f[0])
    skipped.sort()
    return classes, files, skipped


def _inode(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _stat_problem(exc: OSError, is_link: bool) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if is_link and exc.errno == errno.ENOENT:
        return "broken symlink: its target does not exist"
    return exc.strerror or type(exc).__name__


def open_regular(path: Path):
    """``path`` opened for binary reading, only when it is a regular file (or a symlink to one): a named pipe is
    opened without blocking and refused, so no read ever waits for a writer that never comes."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise OSError(_stat_problem(exc, os.path.islink(path))) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{_kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fingerprint_of(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# Decoding bounds. An image of more than GATED_PIXELS is decoded only while the images being decoded by the other
# threads total at most DECODE_PIXELS (a bigger one waits until it is alone): four 13000 x 13000 PNGs are then
# decoded one after the other, not four at once. Before it is converted to RGB, an image much larger than its
# use needs is reduced (box average) to twice the size needed, and JPEGs are decoded at reduced scale.
GATED_PIXELS = 4_000_000
DECODE_PIXELS = 100_000_000
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class DecodeGate:
    """Bounds the pixels decoded at once by the threads of this process (see DECODE_PIXELS)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.busy = 0
        self.condition = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        if pixels <= GATED_PIXELS:
            yield
            return
        pixels = min(pixels, self.limit)
        with self.condition:
            while self.busy and self.busy + pixels > self.limit:
                self.condition.wait()
            self.busy += pixels
        try:
            yield
        finally:
            _release_free_memory()
            with self.condition:
                self.busy -= pixels
                self.condition.notify_all()


DECODE_GATE = DecodeGate(DECODE_PIXELS)


def _release_free_memory() -> None:
    """Give the memory of a huge image just freed back to the system. Pillow allocates images in blocks that
    glibc keeps in the arena of the thread that decoded them, so without this each decoding thread would keep
    the size of the largest image it ever decoded (peak RSS for four 13000 px PNGs: 2.0 GB without, 1.2 GB with)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


@contextmanager
def pillow_size_warnings_off():
    """Pillow warns (two raw lines) about images over Image.MAX_IMAGE_PIXELS; zoo says it once, its own way
    (load_images' ``warn``). Wrap whole loops in it, from one thread: warnings.catch_warnings is process-wide."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


def to_eight_bit(im):
    """16-bit grayscale (PNG, TIFF) scaled to 8 bits: Pillow's convert() would clip every value over 255 to
    white. A 32-bit integer image whose values exceed 255 is taken as 16-bit data the same way."""
    from PIL import Image

    if im.mode not in _SIXTEEN_BIT and not (im.mode == "I" and (im.getextrema()[1] or 0) > 255):
        return im
    import numpy as np

    pixels = np.asarray(im)
    if pixels.dtype != np.uint16:
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
    return Image.fromarray((pixels >> 8).astype(np.uint8), "L")


def open_rgb(path: Path, min_side: Optional[int] = None, on_large: Optional[Callable[[tuple], None]] = None):
    """The whole image as an upright RGB PIL image (EXIF orientation applied). Raises on bad files, and on
    anything that is not a regular file (never opened: see open_regular).

    ``min_side``: the shorter side the caller needs at most; a JPEG is then decoded at reduced scale and an image
    at least four times larger is reduced to about twice that before conversion (bounded memory, the same
    pixels after the caller's antialiased resize). ``on_large((w, h))`` is called for an image over Pillow's
    decompression-bomb warning limit (wrap the caller's loop in pillow_size_warnings_off)."""
    from PIL import Image, ImageOps

    with open_regular(path) as f:
        try:
            im = Image.open(f)  # no 'with': the file closes below, and the loaded pixels stay with the image
        except Image.UnidentifiedImageError:
            raise Image.UnidentifiedImageError("cannot identify image file: not an image format Pillow reads") from None
        w, h = im.size
        if on_large and Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            on_large((w, h))
        with DECODE_GATE.hold(w * h):
            if min_side:
                im.draft("RGB", (min_side, min_side))  # JPEG: let the decoder downscale by 2/4/8, staying >= it
            im.load()  # decodes everything: truncation raises here
            im = to_eight_bit(im)
            if min_side and im.mode in _REDUCIBLE and min(im.size) // (2 * min_side) >= 2:
                im = im.reduce(min(im.size) // (2 * min_side))
            if im.mode != "RGB":
                im = im.convert("RGB")
    ImageOps.exif_transpose(im, in_place=True)
    return im


def error_line(exc: BaseException) -> str:
    """Why a file could not be read, in one short line (control characters escaped)."""
    return printable(str(exc).split("\n")[0] or type(exc).__name__)[:160]


def decode_image(path: Path, side: Optional[int], on_large: Optional[Callable[[tuple], None]] = None):
    """Decode one file to RGB; with ``side``, return the central square resized to side x side as an HWC uint8
    array (large images are decoded at reduced scale where the format allows). Without ``side`` only check it
    decodes. Raises on unreadable, truncated or non-image files."""
    from PIL import Image

    # a check alone decodes a JPEG at 1/8 scale; the whole stream is still read, so truncation is still found
    im = open_rgb(path, side or 8, on_large)
    if not side:
        return None
    import numpy as np

    w, h = im.size
    short = min(w, h)
    box = ((w - short) / 2, (h - short) / 2, (w + short) / 2, (h + short) / 2)
    return np.asarray(im.resize((side, side), Image.BILINEAR, box=box, reducing_gap=None if short < 3 * side else 2.0))


def parse_memory(text: str) -> int:
    """'2G', '512M', '0' -> bytes."""
    given = text
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
        value = float(number) * unit
        if not math.isfinite(value) or value < 0 or value > 2**60:
            raise ValueError
        return int(value)
    except ValueError:
        raise ZooError(f"ZOO_CACHE_MEMORY='{given}' is not a size from 0 to 1E (an exabyte); use e.g. 2G, 512M, "
                       f"or 0 (always stream).") from None


def memory_budget() -> int:
    """Bytes the decoded images may take: $ZOO_CACHE_MEMORY, default half the memory available now (<= 16 GiB)."""
    env = os.environ.get("ZOO_CACHE_MEMORY")
    if env:
        return parse_memory(env)
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30
    return min(available // 2, 16 * 2**30)


def cache_side_for(image_sizes: list[int]) -> int:
    """The cached resolution that serves every model of the command: eval crops need size / 0.875."""
    return min(MAX_CACHE_SIDE, max(math.ceil(s / EVAL_CROP) for s in image_sizes))


def check_classes(root: Path, classes: list[str], counts: dict[str, int], *, after_skip: bool = False) -> None:
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise ZooError(f"Data directory '{root}' needs at least two class sub-folders (found {found}); "
                       f"put each class's images in its own folder, e.g. {root}/cat and {root}/dog.")
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        what = "has no readable images" if after_skip else "is empty"
        raise ZooError(f"Class folder '{empty[0]}' in '{root}' {what}"
                       f"{' (also: ' + ', '.join(empty[1:]) + ')' if len(empty) > 1 else ''}; "
                       f"add images to it or remove it.")


@dataclass(frozen=True)
class Scan:
    """An ImageFolder listed and checked, nothing decoded: its classes and (relative path, label, bytes) files."""

    root: Path
    classes: list[str]
    files: list[tuple[str, int, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # never opened: see _list_files


def scan_images(root: Path, *, split: Optional[tuple] = (8, 1, 1)) -> Scan:
    """List ``root`` (one sub-folder per class) and check the class folders, their counts and ``split`` without
    opening an image: cheap, so bad input fails before anything slow."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"Data directory '{root}' does not exist; pass a folder with one sub-folder per class.")
    classes, files, skipped = _list_files(root)
    counts = class_counts(classes, (label for _, label, _ in files))
    check_classes(root, classes, counts)
    check_split_counts(counts, split)
    return Scan(root, classes, files, skipped)


def load_images(
    root: Path,
    *,
    strict: bool = False,
    image_sizes: list[int] = (224,),
    split: Optional[tuple] = (8, 1, 1),
    budget: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
    scanned: Optional[Scan] = None,
) -> ImageSet:
    """Scan ``root`` (one sub-folder per class), check every image once, and keep them decoded in memory when
    N x 3 x S x S bytes fit ``budget``. Bad input raises ZooError before anything is decoded when possible.
    ``split`` (train:val:test ratios) is checked to give every part an image of every class; None skips that.
    ``scanned``: the result of ``scan_images(root, split=split)`` already made, so the folder is listed once."""
    root = Path(root)
    if scanned is None or Path(scanned.root) != root:
        scanned = scan_images(root, split=split)
    classes, files = scanned.classes, scanned.files
    if strict and scanned.skipped:  # refused before anything is decoded
        _report_skipped(root, scanned.skipped, strict, warn)

    side = cache_side_for(list(image_sizes))
    budget = memory_budget() if budget is None else budget
    in_memory = len(files) * 3 * side * side <= budget
    workers = workers or min(8, os.cpu_count() or 1)

    large: list[tuple[str, tuple[int, int]]] = []

    def check(item):
        rel = item[0]
        try:
            return decode_image(root / rel, side if in_memory else None,
                                lambda size: large.append((rel, size))), None
        except Exception as exc:  # PIL raises many types for bad files; each one is reported, not fatal
            return None, error_line(exc)

    skipped, good = list(scanned.skipped), []
    done = 0
    cache = None
    if in_memory:
        import torch

        # [N, S, S, 3] bytes, filled in place (no second copy); viewed as NCHW it is a channels_last tensor,
        # the layout torch's fast uint8 resizing wants.
        cache = torch.empty((len(files), side, side, 3), dtype=torch.uint8)
        cache_np = cache.numpy()  # the same memory, written through numpy (PIL's arrays are read-only)
    with pillow_size_warnings_off(), ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL
        for item, (array, error) in zip(files, pool.map(check, files, chunksize=16)):
            done += 1
            if progress and (done % 32 == 0 or done == len(files)):
                progress(done, len(files))
            if error:
                skipped.append((item[0], error))
                continue
            if cache is not None:
                cache_np[len(good)] = array
            good.append(Sample(*item))

    if skipped:
        _report_skipped(root, sorted(skipped), strict, warn)
    if large and warn:
        from PIL import Image

        rel, (w, h) = max(large, key=lambda item: item[1][0] * item[1][1])
        warn(f"{len(large)} image(s) have more than {Image.MAX_IMAGE_PIXELS / 1e6:.3g} megapixels (largest "
             f"{printable(rel)}, {w}x{h} px): they are decoded one at a time at reduced size, which is slow; "
             f"shrink them to train faster.")
    counts = class_counts(classes, (s.label for s in good))
    check_classes(root, classes, counts, after_skip=True)
    check_split_counts(counts, split)

    fingerprint = fingerprint_of([f"{s.path}\t{s.size}" for s in good])
    if cache is not None:
        cache = cache[:len(good)].permute(0, 3, 1, 2)
    return ImageSet(root, classes, good, skipped, fingerprint, cache, side if in_memory else 0)


def _report_skipped(root: Path, skipped: list[tuple[str, str]], strict: bool, warn) -> None:
    """Files that cannot be used, listed (ten at most) in one line: an error with ``strict``, else a warning."""
    listing = "; ".join(f"{printable(p)} ({why})" for p, why in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    if strict:
        raise ZooError(f"{len(skipped)} file(s) in '{printable(root)}' cannot be read as images: {listing}{more}. "
                       f"Remove them, or drop --strict to skip them.")
    if warn:
        warn(f"Skipping {len(skipped)} file(s) that cannot be read as images: {listing}{more}.")


# ---------------------------------------------------------------------------------------------------- split


def parse_split(text: str) -> tuple[int, int, int]:
    """'8:1:1' -> (8, 1, 1); every part must be a positive number."""
    parts = text.replace("/", ":").split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(v <= 0 or not math.isfinite(v) for v in values):
        raise ZooError(f"--split '{text}' must be three positive ratios train:val:test, e.g. 8:1:1.")
    return tuple(int(v) if v == int(v) else v for v in values)  # type: ignore[return-value]


def _part_sizes(n: int, ratios) -> tuple[int, int, int]:
    total = sum(ratios)
    n_val = max(1, round(n * ratios[1] / total))
    n_test = max(1, round(n * ratios[2] / total))
    return n - n_val - n_test, n_val, n_test


def check_split_counts(counts: dict[str, int], ratios) -> None:
    if ratios is None:
        return
    small = [(c, n) for c, n in counts.items() if n and _part_sizes(n, ratios)[0] < 1]
    if small:
        c, n = small[0]
        ratio = ":".join(str(r) for r in ratios)
        raise ZooError(f"Class '{c}' has only {n} image(s): the split {ratio} needs at least one image per class in "
                       f"train, val and test (3 per class at least). Add images or change --split.")


def split_warning(counts: dict[str, int], ratios) -> Optional[str]:
    """One line when the split leaves some class fewer than 2 images in a part (its metrics then rest on one
    image); None when every part has at least 2 of every class."""
    if ratios is None:
        return None
    thin = {c: dict(zip(PARTS, _part_sizes(n, ratios))) for c, n in counts.items() if n}
    thin = {c: {p: k for p, k in sizes.items() if k < 2} for c, sizes in thin.items()}
    thin = {c: parts for c, parts in thin.items() if parts}
    if not thin:
        return None
    first = next(iter(thin))
    where = " and ".join(f"{k} in {p}" for p, k in thin[first].items())
    named = ", ".join(printable(c) for c in list(thin)[1:6]) + (", ..." if len(thin) > 6 else "")
    others = f" (also: {named})" if len(thin) > 1 else ""
    ratio = ":".join(str(r) for r in ratios)
    return (f"The split {ratio} leaves class '{printable(first)}' ({counts[first]} images) only {where}{others}: "
            f"fewer than 2 images of a class per part make its metrics rest on one image. Add images or change "
            f"--split.")


@dataclass
class Split:
    train: list[int]  # indices into ImageSet.samples
    val: list[int]
    test: list[int]
    fingerprint: str
    ratios: tuple = (8, 1, 1)
    seed: int = 42

    def part(self, name: str) -> list[int]:
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {f"{p}_size": len(self.part(p)) for p in PARTS}


def split_samples(images: ImageSet, ratios=(8, 1, 1), seed: int = 42) -> Split:
    """Stratified, seeded split. Each class is shuffled by its own generator (seed and class name), so the same
    files, seed and ratios always give the same split, whatever the model."""
    check_split_counts(images.counts(), ratios)
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(images.samples):
        by_class.setdefault(s.label, []).append(i)
    for label, indices in sorted(by_class.items()):
        order = sorted(indices, key=lambda i: images.samples[i].path)
        random.Random(f"{seed}:{images.classes[label]}").shuffle(order)
        n_train, n_val, _ = _part_sizes(len(order), ratios)
        parts["train"] += order[:n_train]
        parts["val"] += order[n_train:n_train + n_val]
        parts["test"] += order[n_train + n_val:]
    for p in PARTS:
        parts[p].sort()
    lines = [f"{p}\t{images.samples[i].path}" for p in PARTS for i in parts[p]]
    return Split(parts["train"], parts["val"], parts["test"], fingerprint_of(lines), tuple(ratios), seed)


def dataset_record(images: ImageSet, split: Split, name: Optional[str] = None) -> "DatasetRecord":
    """What the registry stores about the data of a run."""
    from zoo.spec import DatasetRecord

    return DatasetRecord(path=str(images.root), fingerprint=images.fingerprint, split_fingerprint=split.fingerprint,
                         classes=tuple(images.classes), name=name, **split.sizes())


# ------------------------------------------------------------------------------------------------ transforms


@dataclass(frozen=True)
class Augment:
    """How training images vary: a random resized crop (area ``scale``, aspect ``ratio``; None: the eval transform's
    centre crop), mirror flips, and a per-image policy ('trivial': torchvision's TrivialAugmentWide)."""

    name: str
    scale: Optional[tuple] = CROP_SCALE
    ratio: tuple = CROP_RATIO
    hflip: bool = True
    policy: Optional[str] = None


# --augment presets. seed: the first release's pipeline exactly. light keeps most of each image (a crop of 35-100%
# of the area shifts and zooms it a little). strong: light plus a random photometric/geometric op per image.
AUGMENT_PRESETS = {
    "seed": Augment("seed"),
    "light": Augment("light", scale=(0.35, 1.0), ratio=(0.8, 1.25)),
    "strong": Augment("strong", scale=(0.35, 1.0), ratio=(0.8, 1.25), policy="trivial"),
    "none": Augment("none", scale=None, hflip=False),
}


def augment_for(name: Optional[str], hflip: Optional[bool] = None) -> Augment:
    preset = AUGMENT_PRESETS[name or "seed"]
    return preset if hflip is None or hflip == preset.hflip else replace(preset, hflip=bool(hflip))


def crop_boxes(n: int, side_h: int, side_w: int, generator: "torch.Generator", scale: tuple = CROP_SCALE,
               ratio_range: tuple = CROP_RATIO) -> "torch.Tensor":
    """Random resized crop boxes [n, 4] (top, left, height, width) in pixels, vectorised: ten tries per sample
    of an area in CROP_SCALE and a log-uniform aspect in CROP_RATIO; a sample with no fitting try gets the
    whole image clamped to the ratio range (torchvision's fallback)."""
    import torch

    tries = 10
    area = side_h * side_w
    scale = torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio_range[0]), math.log(ratio_range[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    ok = (w > 0) & (h > 0) & (w <= side_w) & (h <= side_h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    h, w = h[rows, pick], w[rows, pick]
    # fallback: the whole image, cropped to the nearest allowed aspect ratio
    in_ratio = side_w / side_h
    if in_ratio < ratio_range[0]:
        fw, fh = side_w, round(side_w / ratio_range[0])
    elif in_ratio > ratio_range[1]:
        fh, fw = side_h, round(side_h * ratio_range[1])
    else:
        fh, fw = side_h, side_w
    none = first < 0
    h = torch.where(none, torch.tensor(float(fh)), h)
    w = torch.where(none, torch.tensor(float(fw)), w)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (side_h - h + 1))
    left = torch.floor(u[:, 1] * (side_w - w + 1))
    return torch.stack([top, left, h, w], 1).long()


_NORM_CACHE: dict = {}


def normalise(x: "torch.Tensor", mean=IMAGENET_MEAN, std=IMAGENET_STD) -> "torch.Tensor":
    """uint8 [B, 3, H, W] -> float, (x / 255 - mean) / std, keeping x's memory format."""
    import torch

    if x.dim() == 4 and x.is_contiguous():
        fmt = torch.contiguous_format
    elif x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    else:
        fmt = None
    # With per-channel factors of shape [1, 3, 1, 1] the kernel walks x three values at a time; factors expanded
    # to one image [1, 3, H, W] in x's layout make it one vectorised pass (3-4x faster, the same values).
    key = (x.device, tuple(mean), tuple(std), tuple(x.shape[2:]) if fmt is not None else None, fmt)
    if key not in _NORM_CACHE:
        if len(_NORM_CACHE) > 32:
            _NORM_CACHE.clear()
        scale = torch.tensor([1 / (255 * s) for s in std], device=x.device).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(1, 3, 1, 1)
        if fmt is not None:
            full = (1, 3, *x.shape[2:])
            scale = scale.expand(full).contiguous(memory_format=fmt)
            shift = shift.expand(full).contiguous(memory_format=fmt)
        _NORM_CACHE[key] = (scale, shift)
    scale, shift = _NORM_CACHE[key]
    return torch.addcmul(shift, x, scale)  # uint8 x is promoted to float inside the one kernel


def resized_crops(images: "torch.Tensor", boxes: "torch.Tensor", size: int) -> "torch.Tensor":
    """Crop each image [B, 3, S, S] (uint8) at its box (top, left, h, w) and resize it to size x size, for
    accelerators: one batched grid_sample for the whole batch, float 0..255 out. (On the CPU,
    ``cpu_resized_crops`` does one antialiased uint8 interpolation per sample straight from the cache.)"""
    import torch
    import torch.nn.functional as F

    b, _, s_h, s_w = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = w / s_w
    theta[:, 0, 2] = (2 * left + w) / s_w - 1
    theta[:, 1, 1] = h / s_h
    theta[:, 1, 2] = (2 * top + h) / s_h - 1
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    # float 0..255 (no rounding back to uint8: normalise() takes either)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def cpu_resized_crops(cache: "torch.Tensor", indices: "torch.Tensor", boxes: "torch.Tensor", size: int,
                      flips: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """``resized_crops(cache[indices], boxes, size)`` on the CPU without gathering the batch first; samples
    where ``flips`` is true are mirrored left-right."""
    import torch

    # The op behind F.interpolate(mode="bilinear", antialias=True, align_corners=False), called directly: the
    # same uint8 result without F.interpolate's Python argument checks, which cost as much as a small resize.
    resize = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)
    if resize is None:  # a private op: should a torch release rename it, take the public (slower) road
        import torch.nn.functional as F

        def resize(x, out_size, align_corners):
            return F.interpolate(x, size=out_size, mode="bilinear", antialias=True, align_corners=align_corners)
    out_size = [size, size]
    flip_list = flips.tolist() if flips is not None else [False] * len(indices)
    # cache[i:i + 1, :, t:t + h, l:l + w] as one as_strided view instead of four slicing ops (which would clamp
    # a box reaching out of the image: as_strided does not, hence the check)
    _, channels, side_h, side_w = cache.shape
    top, left, h, w = boxes.unbind(1)
    if len(boxes) and not bool(((top >= 0) & (left >= 0) & (h > 0) & (w > 0) & (top + h <= side_h)
                                & (left + w <= side_w)).all()):
        raise ValueError("crop boxes must lie inside the cached images")
    s_n, s_c, s_h, s_w = cache.stride()
    base = cache.storage_offset()
    stride = (s_n, s_c, s_h, s_w)
    view = cache.as_strided
    out = []
    for i, (t, l, h, w), flip in zip(indices.tolist(), boxes.tolist(), flip_list):
        crop = resize(view((1, channels, h, w), stride, base + i * s_n + t * s_h + l * s_w), out_size, False)
        out.append(crop.flip(-1) if flip else crop)
    return torch.cat(out)


def center_crops(images: "torch.Tensor", size: int, chunk: int = 256,
                 prep: Preprocess = IMAGENET) -> "torch.Tensor":
    """Deterministic eval transform on cached squares: the central ``prep.crop_fraction`` of each side (0.875
    unless the model declares its own), resized to size with ``prep.interpolation``."""
    import torch
    import torch.nn.functional as F

    side = images.shape[-1]
    crop = max(1, round(side * prep.crop_fraction))
    start = (side - crop) // 2
    outs = []
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk, :, start:start + crop, start:start + crop]
        if part.device.type != "cpu":
            part = part.float()
        out = F.interpolate(part, size=(size, size), mode=prep.interpolation, antialias=True, align_corners=False)
        outs.append(out.round().clamp(0, 255).to(torch.uint8) if out.is_floating_point() else out)
    if not outs:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.cat(outs).contiguous(memory_format=torch.channels_last)


def pil_eval_transform(size: int, prep: Preprocess = IMAGENET):
    """The same eval transform for images read from disk: resize shorter side to size / crop fraction (0.875
    unless the model declares its own) with the model's interpolation, centre crop."""
    from torchvision.transforms import InterpolationMode, v2

    resize = v2.Resize(prep.resize_to(size), interpolation=InterpolationMode(prep.interpolation), antialias=True)
    return v2.Compose([v2.PILToTensor(), resize, v2.CenterCrop(size)])


def pil_train_transform(size: int, augment: Optional[Augment] = None):
    from torchvision.transforms import v2

    augment = augment or AUGMENT_PRESETS["seed"]
    if augment.scale is None:
        steps = [v2.PILToTensor(), v2.Resize(round(size / EVAL_CROP), antialias=True), v2.CenterCrop(size)]
    else:
        steps = [v2.PILToTensor(), v2.RandomResizedCrop(size, scale=augment.scale, ratio=augment.ratio,
                                                         antialias=True)]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.policy == "trivial":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


def apply_policy(x: "torch.Tensor", policy: Optional[str]) -> "torch.Tensor":
    """The per-image policy of an Augment on a batch [B, 3, H, W] (uint8 or float 0..255); the same dtype out."""
    if policy != "trivial":
        return x
    import torch
    from torchvision.transforms import v2

    op = v2.TrivialAugmentWide()
    as_uint8 = x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8)
    out = torch.stack([op(img) for img in as_uint8])
    return out if x.dtype == torch.uint8 else out.to(x.dtype)


# -------------------------------------------------------------------------------------------------- batches


def _leave_stop_signals_to_main(worker_id: int) -> None:
    """In a DataLoader worker: Ctrl-C is the main process's to handle (it stops the workers itself), and SIGTERM
    gets its default action back (the worker inherited the session's handler): DataLoader ends stuck workers with
    SIGTERM, and a SIGTERM sent to the whole group (timeout, Slurm, Kubernetes) just ends them, which the session
    records as an interruption, not a failure."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _DiskImages:
    """A torch Dataset over files (the streaming fallback); returns uint8 [3, size, size] and the label."""

    def __init__(self, root: Path, samples: list[Sample], indices: list[int], transform,
                 min_side: Optional[int] = None):
        self.root, self.transform, self.min_side = root, transform, min_side  # min_side: see open_rgb
        self.items = [(samples[i].path, samples[i].label) for i in indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            with pillow_size_warnings_off():  # load_images warned about large images once already
                image = open_rgb(self.root / path, self.min_side)
        except Exception as exc:  # the data folder changed after it was scanned (deleted, unmounted, replaced)
            raise ImageGone(f"Cannot read {self.root / path} while training: {error_line(exc)}. The data folder "
                            f"must stay as it was until the run ends.") from None
        return self.transform(image), label


class ImageGone(ZooError):
    """A streamed image could not be read during training. Raised again in the main process by a DataLoader
    worker with its traceback appended: the message keeps only the original line."""

    def __init__(self, message: str):
        if "Original Traceback" in message:  # torch's ExceptionWrapper: "Caught ImageGone in ... worker ..."
            lines = [line for line in message.splitlines() if line.strip()]
            message = lines[-1].split("ImageGone: ", 1)[-1]
        super().__init__(message)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead (torch releases the GIL in its kernels,
    so augmentation overlaps the training step). Its exceptions re-raise here; stopping early stops it."""
    import queue
    import threading

    items: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put((done, exc))
            return
        put((done, None))

    thread = threading.Thread(target=work, name="zoo-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is done:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class Pipeline:
    """Normalised batches for one image size on one device: ``train_epoch(generator)`` and ``eval_batches``."""

    images: ImageSet
    split: Split
    image_size: int
    batch_size: int
    device: "torch.device"
    workers: int = 0
    channels_last: bool = False
    prefetch: bool = False  # make the next batches in a background thread
    augment: Augment = AUGMENT_PRESETS["seed"]
    prep: Preprocess = IMAGENET  # normalisation and eval transform (the model's own when it declares one)
    _train_x: Any = None  # cached uint8 train squares (device or pinned CPU)
    _train_y: Any = None
    _eval: dict = field(default_factory=dict)
    _train_center: Any = None  # train squares centre-cropped once, for --augment none
    world: World = World()  # under torchrun: this rank's share of each epoch and of val/test

    @property
    def streaming(self) -> bool:
        return self.images.cache is None

    @property
    def train_size(self) -> int:
        """Train images per epoch on this rank (all of them without torchrun)."""
        n = len(self.split.train)
        return len(range(n)[self.world.train_share(n)])

    def batches_per_epoch(self) -> int:
        n = self.train_size
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 else 0)  # a last batch of one image is dropped (BatchNorm needs two)

    def _finish(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        x = normalise(x, self.prep.mean, self.prep.std)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def setup(self) -> "Pipeline":
        import torch

        if self.streaming:
            return self
        cache = self.images.cache
        labels = torch.tensor([s.label for s in self.images.samples])
        idx = torch.tensor(self.split.train, dtype=torch.long)
        train_x = cache[idx]
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if train_x.numel() < 0.3 * free:  # the whole train set on the GPU: no copies per batch at all
                train_x = train_x.to(self.device)
            else:
                train_x = train_x.pin_memory()
        self._train_x, self._train_y = train_x, labels[idx].to(self.device)
        for part in ("val", "test"):
            pidx = torch.tensor(self.split.part(part), dtype=torch.long)
            self._eval[part] = (center_crops(cache[pidx], self.image_size, prep=self.prep), labels[pidx])
        return self

    def train_epoch(self, generator: "torch.Generator") -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        """One epoch of augmented, normalised batches on the device, in a seeded random order. In memory, the
        next batches are made by a background thread while the model trains on the current one."""
        if self.streaming:
            return self._stream(self._streamed_train(generator), pil_train_transform(self.image_size, self.augment),
                                True, generator)
        if self.prefetch:
            return prefetch(self._augmented(generator), depth=2)
        return self._augmented(generator)

    def _augmented(self, generator: "torch.Generator") -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        import torch

        n, bs = len(self.split.train), self.batch_size
        order = torch.randperm(n, generator=generator)
        side = self._train_x.shape[-1]
        aug = self.augment
        if aug.scale is None:  # no random crop: the eval transform's centre crop, made once
            if self._train_center is None:
                self._train_center = center_crops(self._train_x.cpu(), self.image_size,
                                                  prep=self.prep).to(self._train_x.device)
            all_boxes = None
        else:  # the epoch's crops and flips, drawn at once
            all_boxes = crop_boxes(n, side, side, generator, aug.scale, aug.ratio)
        all_flips = (torch.rand(n, generator=generator) < 0.5) & aug.hflip
        if self.world.size > 1:  # this rank's share: the same permutation and draws on every rank, disjoint slices
            mine = self.world.train_share(n)
            order, all_flips = order[mine], all_flips[mine]
            all_boxes = None if all_boxes is None else all_boxes[mine]
        for b in range(self.batches_per_epoch()):
            sel = order[b * bs:(b + 1) * bs]
            flips = all_flips[b * bs:(b + 1) * bs]
            if all_boxes is None:
                x = self._train_center[sel.to(self._train_center.device)].to(self.device)
                if flips.any():
                    f = flips.nonzero().squeeze(1).to(x.device)
                    x[f] = x[f].flip(-1)
                yield self._finish(apply_policy(x, aug.policy)), self._train_y[sel.to(self._train_y.device)]
                continue
            boxes = all_boxes[b * bs:(b + 1) * bs]
            if self.device.type == "cpu":  # crop and flip straight from the cache: no gathered copy
                x = cpu_resized_crops(self._train_x, sel, boxes, self.image_size, flips)
            else:
                if self._train_x.device == self.device:  # the whole train set lives on the GPU
                    x = self._train_x[sel.to(self.device, non_blocking=True)]
                elif self.device.type == "cuda":
                    x = self._train_x[sel].pin_memory().to(self.device, non_blocking=True)
                else:  # mps and other accelerators
                    x = self._train_x[sel].to(self.device)
                x = resized_crops(x, boxes, self.image_size)
                if flips.any():
                    f = flips.nonzero().squeeze(1).to(x.device)
                    x[f] = x[f].flip(-1)
            y = self._train_y[sel.to(self._train_y.device)]
            yield self._finish(apply_policy(x, aug.policy)), y

    def _streamed_train(self, generator: "torch.Generator") -> list[int]:
        """The train images streamed this epoch: all (the loader shuffles them), or under torchrun this rank's share
        of a permutation drawn from the epoch's generator."""
        if self.world.size == 1:
            return self.split.train
        import torch

        train = self.split.train
        order = torch.randperm(len(train), generator=generator)[self.world.train_share(len(train))]
        return [train[i] for i in order.tolist()]

    def eval_batches(self, part: str, batch_size: Optional[int] = None):
        """Deterministic batches (resize + centre crop) of 'val' or 'test', in the split's order (under torchrun,
        every world-size-th image from this rank's)."""
        bs = batch_size or self.batch_size * 2
        share = self.world.eval_share(len(self.split.part(part)))
        if self.streaming:
            yield from self._stream(self.split.part(part)[share], pil_eval_transform(self.image_size, self.prep), False,
                                    None, bs)
            return
        x_all, y_all = self._eval[part]
        x_all, y_all = x_all[share], y_all[share]
        for i in range(0, len(y_all), bs):
            x = x_all[i:i + bs]
            y = y_all[i:i + bs]
            if self.device.type != "cpu":
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield self._finish(x), y

    def _stream(self, indices, transform, shuffle, generator, batch_size=None):
        import torch
        from torch.utils.data import DataLoader

        # random crops keep down to 8% of the area, so training reads images at 4x the size; eval needs size/0.875
        min_side = 4 * self.image_size if shuffle else math.ceil(self.image_size / self.prep.crop_fraction)
        dataset = _DiskImages(self.images.root, self.images.samples, indices, transform, min_side)
        if generator is not None:  # seed the workers' own augmentation from the epoch's generator
            seed = int(torch.randint(2**62, (1,), generator=generator))
            generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, generator=generator,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            drop_last=False, persistent_workers=False, worker_init_fn=_leave_stop_signals_to_main,
                            prefetch_factor=4 if self.workers else None)
        batches = iter(loader)
        while True:
            try:
                x, y = next(batches)
            except StopIteration:
                return
            except RuntimeError as exc:  # a worker died: stopped by a signal sent to the group, or a real failure
                signum = _stopped_worker(batches)
                if signum is None:
                    raise
                raise LoaderStopped(signum) from exc
            if shuffle and len(y) < 2:
                continue
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self._finish(x), y


def _stopped_worker(batches: Any) -> Optional[int]:
    """The stop signal (SIGTERM, SIGINT) that ended one of a DataLoader iterator's worker processes, read from
    their exit codes (-signum); None when none was stopped that way."""
    import signal

    for worker in getattr(batches, "_workers", None) or ():
        code = getattr(worker, "exitcode", None)
        if code is not None and -code in (signal.SIGTERM, signal.SIGINT):
            return -code
    return None


def make_pipeline(images: ImageSet, split: Split, *, image_size: int, batch_size: int, device,
                  workers: Optional[int] = None, channels_last: Optional[bool] = None,
                  augment: Optional[Augment] = None, world: Optional[World] = None,
                  prep: Preprocess = IMAGENET) -> Pipeline:
    """``world``: under torchrun, the rank whose share of the data the pipeline yields (zoo.distributed);
    ``prep``: the model's normalisation and eval transform."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if workers is None:
        workers = 0 if images.cache is not None else min(8, os.cpu_count() or 1)
    if channels_last is None:  # the engine keeps models channels_last on CUDA and CPU
        channels_last = device.type in ("cuda", "cpu")
    # A background thread overlaps augmentation with the step on GPUs; on a CPU it only competes for the cores.
    return Pipeline(images, split, image_size, batch_size, device, workers, channels_last,
                    prefetch=device.type == "cuda", augment=augment or AUGMENT_PRESETS["seed"],
                    prep=prep, world=world or World()).setup()
