"""zoo: a command-line model zoo for image classification.

The public API for plugin authors lives here: ``zoo.hookimpl`` marks hook implementations, and
``ModelInfo`` / ``DatasetInfo`` describe what ``register`` records. Importing zoo never imports torch.
"""

from zoo.errors import ZooError
from zoo.hookspecs import hookimpl
from zoo.models import ModelInfo
from zoo.datasets import DatasetInfo

__version__ = "0.1.0"

__all__ = ["DatasetInfo", "ModelInfo", "ZooError", "hookimpl", "__version__"]
