"""Loading a folder once for every run of a command: every file checked by decoding it (bad ones listed and
skipped, or refused with ``strict``), the set fingerprinted, and -- when it fits the memory budget -- each image
kept decoded as uint8 at a bounded resolution (the central square, ``cache_side`` px)."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from zoo.data.decode import decode_image, error_line, pillow_size_warnings_off
from zoo.data.images import ImageSet, Sample, class_counts, fingerprint_of
from zoo.data.scan import Scan, check_classes, scan_images
from zoo.data.split import check_split_counts
from zoo.errors import ZooError, printable
from zoo.preprocess import EVAL_CROP

MAX_CACHE_SIDE = 512  # the in-memory copy never keeps more than 512 x 512 px per image


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
