"""Splitting images into train/val/test: the ``--split`` ratios, the checks that every part gets an image of
each class, and the stratified, seeded split itself (the same files, ratios and seed always give the same one)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from zoo.data.images import fingerprint_of
from zoo.errors import ZooError, printable

if TYPE_CHECKING:
    from zoo.data.images import ImageSet
    from zoo.spec import DatasetRecord

PARTS = ("train", "val", "test")


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
