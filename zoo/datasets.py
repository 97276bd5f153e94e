"""The dataset registry: what plugins register through ``register_datasets(register)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zoo.errors import PluginError
from zoo.naming import NameTable


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset. ``prepare(root: Path) -> Path`` makes (or finds) it under ``root`` and returns an
    ImageFolder-style directory, one sub-folder per class. It raises ZooError when it cannot (offline...)."""

    name: str
    prepare: Callable[[Path], Path]
    plugin: str = "?"
    description: str = ""


class DatasetRegistry(NameTable[DatasetInfo]):
    def __init__(self) -> None:
        super().__init__("dataset", "Pass an image folder (one sub-folder per class) or a registered dataset name.")

    def register_for(self, plugin: str) -> Callable[..., None]:
        def register(name: str, prepare: Callable[[Path], Path], **metadata: Any) -> None:
            if not isinstance(name, str) or not name or not callable(prepare):
                raise PluginError(f"Plugin '{plugin}' called register() without a name and a prepare callable.")
            self.add(name, DatasetInfo(name=name, prepare=prepare, plugin=plugin, **metadata), plugin)

        return register
