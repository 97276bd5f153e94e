"""Finding the data: a ``--data`` value (a folder, or a registered dataset's name) -> the ImageFolder directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from zoo.config import cache_root
from zoo.data.scan import is_utf8
from zoo.errors import ZooError, printable


def resolve_data(data: str) -> tuple[Path, Optional[str]]:
    """``--data`` value -> (ImageFolder directory, dataset name or None). A directory wins over a dataset name."""
    path = Path(data).expanduser()
    if path.is_dir():
        if not is_utf8(str(path.resolve())):
            raise ZooError(f"The path of --data '{printable(path.resolve())}' is not valid UTF-8, so it cannot be "
                           f"recorded in the registry; rename the folder.")
        return path.resolve(), None
    from zoo.plugins import get_plugins

    datasets = get_plugins().datasets()
    info = datasets.find(data)  # case-insensitive, like model names: --data DEMO is the dataset demo
    if info is not None:
        root = info.prepare(cache_root() / "datasets" / info.name)
        return Path(root).resolve(), info.name
    if path.exists():
        raise ZooError(f"--data '{data}' is a file, not a directory; pass a folder with one sub-folder per class.")
    names = datasets.names()
    known = f" Registered datasets: {', '.join(names)}." if names else ""
    raise ZooError(f"Data directory '{data}' does not exist and is not a registered dataset.{known} "
                   f"Pass an image folder with one sub-folder per class.")
