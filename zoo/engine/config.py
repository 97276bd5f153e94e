"""``TrainConfig``: a run's options resolved once (spec + recipe + what 'auto' became), nothing left Optional.

Every later step (model, optimizer, schedule, loss, callbacks, the loop) reads this object, never the ``RunSpec``:
the recipe is applied here and only here. Plugins' builders receive it too (``config.lr``, ``config.options``).
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from zoo.spec import Resolved, RunSpec

DEFAULT_LOSS = "cross_entropy"


@dataclass(frozen=True)
class TrainConfig:
    """One run's training options, every value settled."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    patience: int
    min_delta: float
    seed: int
    pretrained: bool
    weights: str  # "" when the run starts from the builder's (or the plugin's pretrained) weights
    device: str  # torch.device text: cpu, cuda:0, mps
    precision: str  # fp32 | bf16 | fp16
    image_size: int
    compile: bool
    recipe: str  # seed | scratch
    optimizer: str
    schedule: str
    warmup_epochs: float
    label_smoothing: float
    augment: str
    hflip: bool
    bias_decay: bool
    patience_lr: float = 1.0  # patience is counted once the lr is at most this fraction of its peak
    ema: float = 0.0  # the decay of a weight EMA (0: none)
    tta: bool = False  # test on the mean softmax of each image and its mirror image
    loss: str = DEFAULT_LOSS
    callbacks: tuple[str, ...] = ()  # --callback NAME, in the order given
    options: Mapping[str, Any] = field(default_factory=dict)  # --opt KEY=VALUE, over the plugins' defaults

    @classmethod
    def resolve(cls, spec: RunSpec, resolved: Resolved, defaults: Mapping[str, Any] = ()) -> "TrainConfig":
        """The spec with its recipe applied, on this machine. ``defaults``: option defaults the chosen optimizer,
        schedule, loss and callbacks declare (``--opt`` values given win)."""
        full = spec.with_recipe()
        options = {**dict(defaults), **dict(spec.opts)}
        return cls(
            model=full.model, epochs=int(full.epochs), batch_size=full.batch_size, lr=float(full.lr),
            momentum=float(full.momentum), weight_decay=float(full.weight_decay), patience=int(full.patience),
            min_delta=full.min_delta, seed=full.seed, pretrained=full.pretrained, weights=full.weights or "",
            device=resolved.device, precision=resolved.precision, image_size=resolved.image_size,
            compile=full.compile, recipe=full.recipe, optimizer=str(full.optimizer), schedule=str(full.schedule),
            warmup_epochs=float(full.warmup_epochs), label_smoothing=float(full.label_smoothing),
            augment=str(full.augment), hflip=bool(full.hflip), bias_decay=bool(full.bias_decay),
            patience_lr=float(full.patience_lr), ema=float(full.ema or 0.0), tta=bool(full.tta),
            loss=full.loss or DEFAULT_LOSS, callbacks=tuple(full.callbacks), options=MappingProxyType(options))

    def option(self, key: str, default: Any = None) -> Any:
        """``--opt KEY=VALUE`` (or the default a plugin declared for it)."""
        return self.options.get(key, default)


__all__ = ["TrainConfig", "DEFAULT_LOSS"]
