"""The hooks a zoo plugin may implement. A plugin implements any subset, with any subset of the arguments."""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Call ``register(name, builder, **metadata)`` once per architecture; see ``zoo.models.ModelInfo``."""


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Call ``register(name, prepare, **metadata)`` once per dataset; see ``zoo.datasets.DatasetInfo``."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the Typer ``app`` (``@app.command()``); keep heavy imports inside the command."""


@hookspec
def register_optimizers(register: Callable[..., None]) -> None:
    """Call ``register(name, builder, **metadata)`` per optimizer: ``builder(params, config)`` returns a
    ``torch.optim.Optimizer`` (``config``: ``zoo.engine.TrainConfig``; ``lr``, ``momentum``, ``weight_decay``,
    ``options``); metadata ``description``, ``options`` (the ``--opt`` keys it reads, with defaults)."""


@hookspec
def register_schedules(register: Callable[..., None]) -> None:
    """Call ``register(name, builder, **metadata)`` per LR schedule: ``builder(optimizer, config, steps_per_epoch)``
    returns a scheduler stepped once per batch (or None: the lr stays as the optimizer has it)."""


@hookspec
def register_losses(register: Callable[..., None]) -> None:
    """Call ``register(name, builder, **metadata)`` per training loss: ``builder(config)`` returns a module called
    as ``loss(logits, targets)``."""


@hookspec
def register_metrics(register: Callable[..., None]) -> None:
    """Call ``register(name, fn, **metadata)`` per test metric: ``fn(y_true, y_pred, probs)`` (integer label
    tensors, softmax matrix) returns a float, recorded as ``test_<name>``; metadata ``higher_is_better`` (True),
    ``min_classes`` (computed only with more classes than this), ``description``. Import torch inside ``fn``."""


@hookspec
def register_callbacks(register: Callable[..., None]) -> None:
    """Call ``register(name, builder, **metadata)`` per callback: ``builder(config)`` returns an object with any of
    the hooks of ``zoo.engine.Callback``; ``zoo train --callback NAME`` turns it on."""
