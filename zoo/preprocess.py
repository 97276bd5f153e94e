"""How an image becomes a model's input at evaluation: resize, centre crop, normalise (standard library only).

A model declares its own ``Preprocess`` through its metadata (timm models carry their pretrained configuration's);
every other model keeps ImageNet's statistics and torchvision's 0.875 centre crop. The values a run trained with
are recorded in its params and its checkpoint, and ``evaluate``, ``predict`` and ``export`` read them back there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # val/test: resize the shorter side to size / 0.875, then take the central size x size
INTERPOLATIONS = ("bilinear", "bicubic")
PARAM_KEYS = ("mean", "std", "interpolation", "crop_fraction")  # params rows and checkpoint entries


@dataclass(frozen=True)
class Preprocess:
    """Normalisation (per-channel mean and std of [0, 1] pixels) and the eval transform: resize the shorter side
    to ``size / crop_fraction`` with ``interpolation`` (antialiased), then take the central ``size`` square."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_fraction: float = EVAL_CROP

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values each, std above 0 (got {self.mean}, {self.std})")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation '{self.interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction {self.crop_fraction} is not in (0, 1]")

    def resize_to(self, size: int) -> int:
        """The shorter side an image is resized to before its central ``size`` x ``size`` crop."""
        return round(size / self.crop_fraction)

    def params(self) -> dict[str, Any]:
        """Params rows / checkpoint entries (JSON-friendly)."""
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std],
                "interpolation": self.interpolation, "crop_fraction": float(self.crop_fraction)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Preprocess":
        """From a checkpoint dict or params (those written before the keys existed: ImageNet's, bilinear, 0.875)."""
        default = cls()
        return cls(mean=tuple(float(m) for m in record.get("mean") or default.mean),  # type: ignore[arg-type]
                   std=tuple(float(s) for s in record.get("std") or default.std),  # type: ignore[arg-type]
                   interpolation=record.get("interpolation") or default.interpolation,
                   crop_fraction=float(record.get("crop_fraction") or default.crop_fraction))


IMAGENET = Preprocess()
