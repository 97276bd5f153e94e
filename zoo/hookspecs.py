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
