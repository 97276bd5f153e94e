"""Name handling shared by every registry: shell-style patterns, natural sort, close-name suggestions."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Generic, Iterable, TypeVar

from zoo.errors import DuplicateName, UnknownName

T = TypeVar("T")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: resnet18 < resnet34 < resnet101."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def match(names: Iterable[str], pattern: str | None) -> list[str]:
    """Names matching a shell-style pattern (case-insensitive), naturally sorted; no pattern matches all."""
    names = list(names)
    if pattern:
        pat = pattern.lower()
        names = [n for n in names if fnmatch.fnmatchcase(n.lower(), pat)]
    return natural_sorted(names)


def suggest(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    names = list(names)
    close = difflib.get_close_matches(name.lower(), names, n=n, cutoff=0.5)
    if not close:
        close = [x for x in natural_sorted(names) if x.startswith(name.lower()[:3])][:n]
    return close


def unknown(kind: str, name: str, names: Iterable[str], hint: str) -> UnknownName:
    close = suggest(name, names)
    did_you_mean = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownName(f"Unknown {kind} '{name}'.{did_you_mean} {hint}")


class NameTable(Generic[T]):
    """Name -> entry, where each entry knows the plugin that registered it."""

    def __init__(self, kind: str, hint: str):
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, plugin: str) -> None:
        if name in self._items:
            other = getattr(self._items[name], "plugin", "?")
            raise DuplicateName(
                f"{self.kind.capitalize()} '{name}' is registered twice: by plugin '{other}' and by plugin "
                f"'{plugin}'. Remove or rename one of them (ZOO_BLOCK_PLUGINS=name skips a plugin)."
            )
        self._items[name] = item

    def remove_plugin(self, plugin: str) -> None:
        """Forget every entry ``plugin`` registered (a plugin that failed half-way is skipped whole)."""
        self._items = {k: v for k, v in self._items.items() if getattr(v, "plugin", None) != plugin}

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            lowered = {k.lower(): v for k, v in self._items.items()}
            if name.lower() in lowered:
                return lowered[name.lower()]
            raise unknown(self.kind, name, self._items, self.hint) from None

    def find(self, name: str) -> T | None:
        """The entry named ``name``, compared case-insensitively like ``get``; None when there is none."""
        if name in self._items:
            return self._items[name]
        return next((v for k, v in self._items.items() if k.lower() == name.lower()), None)

    def names(self, pattern: str | None = None) -> list[str]:
        return match(self._items, pattern)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
