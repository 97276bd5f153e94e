"""Image folders for training: the package's modules, re-exported here under the names zoo has always used."""

from zoo.data.pipeline import *  # noqa: F401,F403
from zoo.data.pipeline import _DiskImages, _list_files, _report_skipped  # noqa: F401
