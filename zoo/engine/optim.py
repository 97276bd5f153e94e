"""Optimizers and LR schedules: the registered builders (``register_optimizers``, ``register_schedules``), called
with the run's ``TrainConfig``, and the schedule arithmetic the built-ins share."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

    from zoo.components import ComponentTable
    from zoo.engine.config import TrainConfig


def param_groups(model: "torch.nn.Module", config: "TrainConfig") -> Any:
    """What the optimizer builder gets. Without ``bias_decay``, biases and normalisation weights (every parameter
    with one dimension) get no weight decay; with it (or no decay at all) one group in the model's order."""
    if config.bias_decay or not config.weight_decay:
        return model.parameters()  # the seed recipe: one group, in the model's order
    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizer(model: "torch.nn.Module", config: "TrainConfig",
                   table: "ComponentTable") -> "torch.optim.Optimizer":
    """The optimizer ``config.optimizer`` names, over ``param_groups``."""
    return table.check(config.optimizer).builder(param_groups(model, config), config)


def make_scheduler(optimizer: "torch.optim.Optimizer", config: "TrainConfig", steps_per_epoch: int,
                   table: "ComponentTable") -> Optional[Any]:
    """The per-batch scheduler ``config.schedule`` names (None: the lr stays as it is)."""
    return table.check(config.schedule).builder(optimizer, config, steps_per_epoch)


def lr_factor(step: int, config: Any, batches: int) -> float:
    """The fraction of the peak lr at optimizer step ``step`` (0-based) of a run of ``config.epochs`` epochs:
    a linear warm-up from 1/25 over ``warmup_epochs``, then constant, cosine to 0, onecycle (warm-up over 30%
    of the steps when none is given, then cosine to 0), or step (x0.1 at half and at three quarters)."""
    total = max(1, config.epochs * batches)
    warmup = config.warmup_epochs * batches
    if config.schedule == "onecycle" and not warmup:
        warmup = 0.3 * total
    if warmup and step < warmup:
        return 1 / 25 + (1 - 1 / 25) * step / warmup
    if config.schedule in ("cosine", "onecycle"):
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":
        epoch = step // max(1, batches)
        return 0.1 ** ((epoch >= config.epochs // 2) + (epoch >= (3 * config.epochs) // 4))
    return 1.0


def factor_schedule(optimizer: "torch.optim.Optimizer", config: "TrainConfig", steps_per_epoch: int):
    """The built-in schedules: a per-batch LambdaLR for ``lr_factor``; None for the constant schedule without
    warm-up (the seed recipe)."""
    import torch

    if config.schedule == "constant" and not config.warmup_epochs:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, steps_per_epoch))


__all__ = ["param_groups", "make_optimizer", "make_scheduler", "lr_factor", "factor_schedule"]
