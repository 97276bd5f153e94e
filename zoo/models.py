"""The architecture registry: what plugins register through ``register_models(register)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from zoo.errors import PluginError
from zoo.naming import NameTable
from zoo.preprocess import IMAGENET, Preprocess

if TYPE_CHECKING:  # torch is imported only by builders
    from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """One architecture. ``builder(*, num_classes: int, pretrained: bool = False) -> nn.Module``."""

    name: str
    builder: Callable[..., "nn.Module"]
    plugin: str = "?"
    family: str = ""
    description: str = ""
    min_size: int = 32  # smallest square input (px) the architecture accepts
    default_size: int = 224  # input size it was designed for
    pretrained: bool = False  # whether pretrained weights exist
    params: Optional[int] = None  # parameter count at 1000 classes, when known without building
    preprocess: Preprocess = IMAGENET  # normalisation and eval transform the model expects
    source: str = ""  # where the architecture comes from (torchvision, timm, ...); the plugin's name by default
    tags: tuple[str, ...] = ()  # names of the pretrained weights that exist (timm: 'a1_in1k', ...)
    # () -> (path, url) of the pretrained weights file (called without building the model), so --dry-run and an
    # offline --pretrained can list every missing file with its destination; None: the plugin does not say
    weights_file: Optional[Callable[[], tuple[str, str]]] = None

    def check_pretrained(self, pretrained: bool) -> None:
        """Refuse pretrained=True for an architecture without weights, in the words the CLI shows."""
        if pretrained and not self.pretrained:
            from zoo.errors import ZooError

            raise ZooError(
                f"Model '{self.name}' has no pretrained weights; train it with --no-pretrained "
                f"or pass a local file with --weights FILE."
            )

    def build(self, num_classes: int, pretrained: bool = False) -> "nn.Module":
        self.check_pretrained(pretrained)
        return self.builder(num_classes=num_classes, pretrained=pretrained)


METADATA = frozenset(ModelInfo.__dataclass_fields__) - {"plugin", "name", "builder"}  # what register() takes


class ModelRegistry(NameTable[ModelInfo]):
    def __init__(self) -> None:
        super().__init__("model", "Run 'zoo models' to see them all.")

    def register_for(self, plugin: str) -> Callable[..., None]:
        """The ``register`` callable handed to one plugin's ``register_models`` hook."""

        def register(name: str, builder: Callable[..., Any], **metadata: Any) -> None:
            if not isinstance(name, str) or not name or not callable(builder):
                raise PluginError(f"Plugin '{plugin}' called register() without a name and a callable builder.")
            unknown = set(metadata) - METADATA
            if unknown:
                raise PluginError(
                    f"Plugin '{plugin}' registered model '{name}' with unknown metadata: {', '.join(sorted(unknown))}."
                )
            metadata.setdefault("family", name.rstrip("0123456789_").split("_")[0] or name)
            metadata["source"] = metadata.get("source") or plugin
            if not isinstance(metadata.get("preprocess", IMAGENET), Preprocess):
                raise PluginError(f"Model '{name}' of plugin '{plugin}': preprocess is not a "
                                  f"zoo.preprocess.Preprocess.")
            info = ModelInfo(name=name, builder=builder, plugin=plugin, **metadata)
            if info.min_size > info.default_size:
                raise PluginError(f"Model '{name}' of plugin '{plugin}': min_size is above default_size.")
            self.add(name, info, plugin)

        return register
