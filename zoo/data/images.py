"""What a verified image folder is: its samples (relative path, label, bytes), the decoded pixels when they fit
in memory, the per-class counts, and the fingerprint of a list of lines (files, or a split)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch


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


def fingerprint_of(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
