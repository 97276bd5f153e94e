"""zoo: a command-line model zoo for image classification.

The public API for plugin authors lives here: ``zoo.hookimpl`` marks hook implementations, and
``ModelInfo`` / ``DatasetInfo`` describe what ``register`` records; ``zoo.track`` records a run from your own
training loop (zoo.tracking). Importing zoo never imports torch.
"""

from zoo.errors import ZooError
from zoo.hookspecs import hookimpl
from zoo.models import ModelInfo
from zoo.datasets import DatasetInfo

__version__ = "0.1.0"

__all__ = ["DatasetInfo", "ModelInfo", "ZooError", "hookimpl", "track", "__version__"]


def __getattr__(name: str):
    if name == "track":  # zoo.track(...): recording runs from your own code (zoo.tracking), loaded on first use
        from zoo.tracking import track

        return track
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
