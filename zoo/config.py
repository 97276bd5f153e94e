"""The config file: ``zoo.toml`` in the current folder, then in the user's config folder (``~/.config/zoo`` on
Linux, as ``typer.get_app_dir('zoo')`` says elsewhere). A key in ./zoo.toml wins over the same key in the user's
file; the command line and the environment win over both::

    registry = "runs/registry.db"     # a file (relative to the zoo.toml it is in) or a SQLAlchemy URL
    artifacts = "runs/artifacts"      # checkpoints folder (relative to the zoo.toml it is in)

    [train]                           # defaults for zoo train, checked by the train command
    epochs = 10

Imports only the standard library (and typer's click for the folder), so read commands stay fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from zoo.errors import ZooError

FILE_NAME = "zoo.toml"


def cache_root() -> Path:
    """Where generated and downloaded datasets (and the timm plugin's catalog) live: $ZOO_CACHE, default
    ~/.cache/zoo."""
    root = Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo").expanduser()
    if root.exists() and not root.is_dir():
        raise ZooError(f"ZOO_CACHE={root} is not a folder: point it at a folder zoo may write (default "
                       f"~/.cache/zoo).")
    return root

PATH_KEYS = ("registry", "artifacts")  # top-level keys: strings, paths relative to their file
TABLES = ("train",)  # top-level tables whose keys the commands that use them check


@dataclass(frozen=True)
class Config:
    registry: Optional[str] = None
    artifacts: Optional[str] = None
    train: dict[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the files read, most important first
    sources: dict[str, Path] = field(default_factory=dict)  # key -> the file that set it ("train.epochs" too)


def user_config_dir() -> Path:
    import typer

    return Path(typer.get_app_dir("zoo"))


def config_files() -> list[Path]:
    """The config files that exist, most important first: ./zoo.toml, then the user's."""
    found = []
    for path in (Path.cwd() / FILE_NAME, user_config_dir() / FILE_NAME):
        if path.is_dir():
            raise ZooError(f"{path} is a folder, not a config file: remove it, or make it a TOML file.")
        if path.is_file() and not any(path.samefile(p) for p in found):
            found.append(path)
    return found


def load_config(files: Optional[list[Path]] = None) -> Config:
    """The merged config; a file that is not valid TOML, an unknown key or a value of the wrong type is one
    ZooError naming the file and the key."""
    files = config_files() if files is None else files
    values: dict[str, Any] = {}
    train: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    for path in reversed(files):  # the user's first, then ./zoo.toml over it
        data = _read(path)
        for key, value in data.items():
            if key in PATH_KEYS:
                if not isinstance(value, str) or not value.strip():
                    raise ZooError(f"{path}: '{key}' must be a non-empty string (a path or URL), not {value!r}.")
                values[key] = _relative_to(path, value.strip())
                sources[key] = path
            elif key in TABLES:
                if not isinstance(value, dict):
                    raise ZooError(f"{path}: '{key}' must be a table ([{key}] with its keys below it).")
                train.update(value)
                sources.update({f"{key}.{k}": path for k in value})
            else:
                known = ", ".join([*PATH_KEYS, *(f"[{t}]" for t in TABLES)])
                raise ZooError(f"{path}: unknown key '{key}'; a zoo.toml knows {known}.")
    return Config(registry=values.get("registry"), artifacts=values.get("artifacts"), train=train,
                  files=tuple(files), sources=sources)


def _read(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"{path} is not valid TOML: {exc}.") from None
    except UnicodeDecodeError as exc:
        raise ZooError(f"{path} is not valid TOML: not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    except OSError as exc:
        raise ZooError(f"Cannot read {path}: {exc.strerror or exc}.") from None


def _relative_to(path: Path, value: str) -> str:
    """A path value relative to the folder of the file that holds it; URLs (with ://) as they are."""
    if "://" in value:
        return value
    target = Path(value).expanduser()
    return str(target if target.is_absolute() else path.parent / target)
