"""The learning-rate range test (``zoo lr-find``) and the lr it suggests."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from zoo.engine.device import autocast
from zoo.spec import Resolved, RunSpec

if TYPE_CHECKING:
    import torch

    from zoo.data import Pipeline
    from zoo.plugins import Plugins


def lr_range_test(model: "torch.nn.Module", pipeline: "Pipeline", spec: RunSpec, resolved: Resolved, *,
                  start: float = 1e-6, end: float = 10.0, steps: int = 100,
                  plugins: Optional["Plugins"] = None) -> list[tuple[float, float]]:
    """The learning-rate range test (Smith 2015; fastai's lr_find): one optimizer step per batch with the lr
    growing exponentially from ``start`` to ``end``; returns (lr, smoothed loss) until the loss diverges."""
    import torch

    from zoo.engine.loop import resolve_config
    from zoo.engine.losses import make_loss
    from zoo.engine.optim import make_optimizer

    if plugins is None:
        from zoo.plugins import get_plugins

        plugins = get_plugins()
    config = resolve_config(spec, resolved, plugins)
    device = torch.device(config.device)
    model = model.to(device).train()
    optimizer = make_optimizer(model, config, plugins.components("optimizer"))
    loss_fn = make_loss(config, plugins.components("loss"))
    generator = torch.Generator().manual_seed(config.seed)
    points: list[tuple[float, float]] = []
    smooth, best, beta, step = 0.0, math.inf, 0.9, 0
    while step < steps:
        for x, y in pipeline.train_epoch(generator):
            lr = start * (end / start) ** (step / max(1, steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, config.precision):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            step += 1
            smooth = beta * smooth + (1 - beta) * value if math.isfinite(value) else math.inf
            debiased = smooth / (1 - beta ** step)
            if not math.isfinite(debiased) or (step > 10 and debiased > 4 * best):
                return points
            best = min(best, debiased)
            points.append((lr, debiased))
            if step >= steps:
                break
    return points


def suggest_lr(points: list[tuple[float, float]]) -> Optional[float]:
    """A tenth of the lr where the smoothed loss is lowest (past it the loss climbs: too high to train with);
    None with too few points to tell."""
    if len(points) < 10:
        return None
    lowest = min(points, key=lambda p: p[1])
    return lowest[0] / 10


__all__ = ["lr_range_test", "suggest_lr"]
