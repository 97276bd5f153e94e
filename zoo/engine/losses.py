"""The training loss: the registered builder ``config.loss`` names (``register_losses``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.components import ComponentTable
    from zoo.engine.config import TrainConfig


def make_loss(config: "TrainConfig", table: "ComponentTable") -> Any:
    """A module called as ``loss(logits, targets)``."""
    return table.check(config.loss).builder(config)


__all__ = ["make_loss"]
