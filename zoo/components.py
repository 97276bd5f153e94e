"""The registries of training parts plugins add: optimizers, schedules, losses, metrics and callbacks.

Each hook of ``zoo.hookspecs`` (``register_optimizers(register)`` ...) hands plugins a ``register(name, builder,
**metadata)``; what it records is a ``Component``. Standard library only: the read commands use the metrics'
metadata (which way is better, the display order) without importing torch; builders import torch when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from zoo.errors import PluginError, ZooError
from zoo.naming import NameTable

# kind -> (hook name, the flag that picks one, what the builder is called with)
KINDS: dict[str, tuple[str, str, str]] = {
    "optimizer": ("register_optimizers", "--optimizer", "builder(params, config) -> torch.optim.Optimizer"),
    "schedule": ("register_schedules", "--schedule",
                 "builder(optimizer, config, steps_per_epoch) -> a per-batch LR scheduler, or None"),
    "loss": ("register_losses", "--loss", "builder(config) -> a loss module: loss(logits, targets)"),
    "metric": ("register_metrics", "", "fn(y_true, y_pred, probs) -> float, on the test split"),
    "callback": ("register_callbacks", "--callback", "builder(config) -> a callback (zoo.engine.Callback)"),
}


@dataclass(frozen=True)
class Component:
    """One registered part. ``options``: the ``--opt`` keys it reads, with their defaults (and so their types)."""

    kind: str
    name: str
    builder: Callable[..., Any]
    plugin: str = "?"
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True  # metrics: which way ranks first in compare
    min_classes: int = 0  # metrics: computed only when the test split has more classes than this


_METADATA = {"description", "options"}
_METRIC_METADATA = _METADATA | {"higher_is_better", "min_classes"}


class ComponentTable(NameTable[Component]):
    """Name -> Component for one kind; ``check`` is the one red line an unknown name gets."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind, f"`zoo plugins` shows what each plugin registers.")
        self.flag = KINDS[kind][1]

    def register_for(self, plugin: str) -> Callable[..., None]:
        """The ``register`` callable handed to one plugin's hook."""

        def register(name: str, builder: Callable[..., Any], **metadata: Any) -> None:
            if not isinstance(name, str) or not name or not callable(builder):
                raise PluginError(f"Plugin '{plugin}' registered a {self.kind} without a name and a callable.")
            allowed = _METRIC_METADATA if self.kind == "metric" else _METADATA
            unknown = set(metadata) - allowed
            if unknown:
                raise PluginError(f"Plugin '{plugin}' registered {self.kind} '{name}' with unknown metadata: "
                                  f"{', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))}).")
            options = dict(metadata.pop("options", None) or {})
            self.add(name, Component(self.kind, name, builder, plugin, options=options, **metadata), plugin)

        return register

    def check(self, name: str) -> Component:
        """The component named ``name``, or one red line listing the registered ones."""
        found = self.find(name)
        if found is None:
            raise ZooError(f"{self.flag} '{name}' is not one of {', '.join(self.names_in_order())}.")
        return found

    def names_in_order(self) -> list[str]:
        """Registration order (built-ins first), the order errors and `zoo plugins` list them in."""
        return list(self._items)

    def by_plugin(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self._items.values():
            out.setdefault(item.plugin, []).append(item.name)
        return out

    def values(self) -> list[Component]:
        return list(self._items.values())


def option_defaults(parts: list[Component]) -> dict[str, Any]:
    """The ``--opt`` keys the chosen parts read, with their defaults (the first part to declare a key wins)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.options.items():
            out.setdefault(key, value)
    return out


def check_options(given: Mapping[str, Any], parts: list[Component]) -> None:
    """Every ``--opt`` key is read by one of the run's parts, with a value of the type its default has."""
    known = option_defaults(parts)
    for key, value in given.items():
        if key not in known:
            names = ", ".join(f"{p.kind} {p.name}" for p in parts)
            keys = ", ".join(sorted(known)) or "none"
            raise ZooError(f"--opt {key}: no part of this run reads it ({names}); the options they read: {keys}.")
        want = type(known[key])
        ok = isinstance(value, want) or (want is float and isinstance(value, int) and not isinstance(value, bool))
        if known[key] is not None and not ok:
            raise ZooError(f"--opt {key}={value!r}: must be {want.__name__} like its default {known[key]!r}.")


def metric_directions(table: ComponentTable) -> dict[str, bool]:
    """Recorded key (test_<name>) -> higher_is_better, for every registered metric."""
    from zoo.vocab import metric_key

    return {metric_key(c.name): c.higher_is_better for c in table.values()}


__all__ = ["metric_directions", "KINDS", "Component", "ComponentTable", "option_defaults", "check_options"]
