"""A run's test predictions, packed: each test image's index in the data set, its true and predicted class, and
the predicted class's probability, so two runs on one split can be compared image by image (``zoo compare A B``).

Stored as one compressed blob per run (the ``predictions`` table): 12 bytes an image before compression, four
little-endian arrays one after another, instead of four rows an image in the long-form tables. Standard library
only: the store and the read commands import it without torch.
"""

from __future__ import annotations

import array
import sys
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

FORMAT = 1  # the blob's layout version, stored beside it
_CODES = ("I", "H", "H", "f")  # index: uint32, true and predicted class: uint16, probability: float32


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions, in the test split's order (image indexes ascending)."""

    index: tuple[int, ...]  # the image's position in the data set's sorted file list
    true: tuple[int, ...]
    pred: tuple[int, ...]
    prob: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def of(cls, index: Sequence[int], true: Sequence[int], made: Iterable[tuple[int, float]]) -> "Predictions":
        """From the split's test indexes, their labels and the engine's (predicted class, probability) pairs."""
        made = list(made)
        if not (len(index) == len(true) == len(made)):
            raise ValueError(f"{len(made)} predictions for {len(index)} test images")
        return cls(tuple(int(i) for i in index), tuple(int(t) for t in true), tuple(int(p) for p, _ in made),
                   tuple(float(q) for _, q in made))

    def correct(self) -> dict[int, bool]:
        """Image index -> whether the run classified it right."""
        return {i: t == p for i, t, p in zip(self.index, self.true, self.pred)}

    @property
    def accuracy(self) -> float:
        return sum(t == p for t, p in zip(self.true, self.pred)) / len(self) if len(self) else float("nan")

    def pack(self) -> bytes:
        parts = []
        for code, values in zip(_CODES, (self.index, self.true, self.pred, self.prob)):
            arr = array.array(code, values)
            if sys.byteorder == "big":
                arr.byteswap()
            parts.append(arr.tobytes())
        return zlib.compress(b"".join(parts), 6)

    @classmethod
    def unpack(cls, blob: bytes, count: int) -> "Predictions":
        raw = zlib.decompress(blob)
        columns, at = [], 0
        for code in _CODES:
            arr = array.array(code)
            size = arr.itemsize * count
            arr.frombytes(raw[at:at + size])
            if sys.byteorder == "big":
                arr.byteswap()
            columns.append(tuple(arr))
            at += size
        if at != len(raw):
            raise ValueError(f"a predictions blob of {len(raw)} bytes does not hold {count} images")
        return cls(*columns)
