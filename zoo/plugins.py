"""Builds the plugin manager: built-in plugins, then entry points of group ``zoo``, then ``ZOO_PLUGINS_DIR`` files.

Environment:
- ``ZOO_DISABLE_PLUGIN_AUTOLOAD=1``: load only the built-ins (no entry points, no plugin directories).
- ``ZOO_PLUGINS_DIR``: directories (os.pathsep-separated) whose ``*.py`` files are loaded as plugins.
- ``ZOO_BLOCK_PLUGINS``: comma-separated plugin names never to load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError

ENTRY_POINT_GROUP = "zoo"
BUILTIN_PACKAGE = "zoo_builtin_plugins"
# Module names inside the top-level plugins/ folder, loaded in this order.
BUILTIN_PLUGINS = ("tinycnn", "alexnet", "resnet", "torchvision_models", "timm_models", "datasets", "training",
                   "loggers")
SLOW_IMPORT_S = 0.1  # a plugin whose import takes longer is flagged by `zoo plugins`: every command pays it
HEAVY_MODULES = ("torch", "torchvision", "tensorflow", "jax", "pandas", "matplotlib")


@dataclass
class PluginRecord:
    name: str
    source: str  # built-in | entry point | directory
    location: str
    version: Optional[str] = None
    error: Optional[str] = None  # set when the plugin failed to load
    hooks: list[str] = field(default_factory=list)
    import_s: Optional[float] = None  # seconds its module took to import (None: not imported)
    heavy: list[str] = field(default_factory=list)  # heavy modules (torch...) its import brought in
    unknown_hooks: list[str] = field(default_factory=list)  # hookimpls whose name is no zoo hook

    @property
    def slow(self) -> bool:
        return self.import_s is not None and self.import_s > SLOW_IMPORT_S

    def unknown_hooks_warning(self) -> Optional[str]:
        if not self.unknown_hooks:
            return None
        names = ", ".join(f"'{h}'" for h in self.unknown_hooks)
        return (f"Plugin '{self.name}' ({self.location}) implements {names}, which is not a zoo hook, so zoo never "
                f"calls it. The zoo hooks are: {', '.join(hook_names())}.")


def hook_names() -> list[str]:
    """The hooks a plugin may implement (the names in zoo.hookspecs)."""
    return sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec"))


@dataclass
class Plugins:
    """A plugin manager plus what was loaded (and what failed) from where."""

    pm: pluggy.PluginManager
    records: list[PluginRecord]
    blocked: frozenset = frozenset()
    autoload: bool = True
    _models: object = None
    _datasets: object = None
    _components: dict = field(default_factory=dict)

    @property
    def failures(self) -> list[PluginRecord]:
        return [r for r in self.records if r.error]

    def _call_each(self, hook_name: str, table) -> None:
        """Each plugin's ``hook_name(register)``. A plugin that fails in it (a bug, bad metadata) is skipped: what
        it registered is removed, its record marked broken, one warning names it, and the others work."""
        from zoo.errors import DuplicateName, print_warning

        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order: built-ins, entry points, directories
            kwargs = {"register": table.register_for(impl.plugin_name)}
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except DuplicateName:  # two plugins claim a name: the user must choose, zoo cannot
                raise
            except (Exception, SystemExit) as exc:  # a plugin bug: name the plugin instead of showing a traceback
                why = str(exc) if isinstance(exc, PluginError) else (
                    f"Plugin '{impl.plugin_name}' failed in {hook_name}: {describe_failure(exc)}.")
                table.remove_plugin(impl.plugin_name)
                record = next((r for r in self.records if r.name == impl.plugin_name), None)
                if record is not None:
                    record.error = f"{hook_name}: {why}"
                print_warning(f"{why} Skipped it; fix it, or silence this with "
                              f"ZOO_BLOCK_PLUGINS={impl.plugin_name}.")

    def models(self):
        """The architecture registry, filled on first use (plugin imports stay cheap until then)."""
        if self._models is None:
            from zoo.models import ModelRegistry

            table = ModelRegistry()
            self._call_each("register_models", table)
            self._models = table
        return self._models

    def components(self, kind: str):
        """The registry of one kind of training part (optimizer, schedule, loss, metric, callback), filled on
        first use; see ``zoo.components``."""
        if kind not in self._components:
            from zoo.components import KINDS, ComponentTable

            table = ComponentTable(kind)
            self._call_each(KINDS[kind][0], table)
            self._components[kind] = table
        return self._components[kind]

    def registrations(self) -> dict[str, dict[str, list[str]]]:
        """plugin -> hook -> the names it registered there (models, datasets and every training part)."""
        from zoo.components import KINDS

        out: dict[str, dict[str, list[str]]] = {}
        tables = [("register_models", self.models()), ("register_datasets", self.datasets())]
        tables += [(KINDS[kind][0], self.components(kind)) for kind in KINDS]
        for hook, table in tables:
            for name in table.names():
                plugin = getattr(table.find(name), "plugin", "?")
                out.setdefault(plugin, {}).setdefault(hook, []).append(name)
        return out

    def datasets(self):
        if self._datasets is None:
            from zoo.datasets import DatasetRegistry

            table = DatasetRegistry()
            self._call_each("register_datasets", table)
            self._datasets = table
        return self._datasets

    def missing_model(self, model: str, plugin: Optional[str]) -> str:
        """Why a model recorded with a run is unknown now, and how to load the plugin that registered it."""
        if not plugin or plugin == "?":
            return (f"Model '{model}' is not registered by any loaded plugin; load the plugin that provides it "
                    f"(ZOO_PLUGINS_DIR or pip install), then `zoo models` lists it.")
        head = f"Model '{model}' comes from plugin '{plugin}'"
        record = next((r for r in self.records if r.name == plugin), None)
        if plugin in self.blocked:
            return (f"{head}, which ZOO_BLOCK_PLUGINS skips; remove '{plugin}' from ZOO_BLOCK_PLUGINS to use "
                    f"this run.")
        if record is not None and record.error:
            return (f"{head}, which failed to load ({record.error}); fix it, and `zoo plugins` shows it "
                    f"loaded.")
        if record is not None:
            return (f"{head}, which is loaded but no longer registers '{model}'; install the version of "
                    f"'{plugin}' the run was trained with.")
        if not self.autoload:
            return (f"{head}, which is not loaded: ZOO_DISABLE_PLUGIN_AUTOLOAD is set, so only the built-ins "
                    f"load; unset it.")
        return (f"{head}, which is not loaded. Load it: put {plugin}.py in a folder listed in ZOO_PLUGINS_DIR, "
                f"or pip install the package that provides it (entry point '{plugin}' in group "
                f"'{ENTRY_POINT_GROUP}').")

    def register_commands(self, app) -> None:
        """Each plugin's commands; a plugin that fails here is recorded as broken and warned about, the rest
        of the command line still works."""
        from zoo.errors import print_warning

        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(**({"app": app} if "app" in impl.argnames else {}))
            except (Exception, SystemExit) as exc:
                record = next((r for r in self.records if r.name == impl.plugin_name), None)
                if record is not None:
                    record.error = f"register_commands: {describe_failure(exc)}"
                print_warning(f"Plugin '{impl.plugin_name}' failed in register_commands: {describe_failure(exc)}. "
                              f"Fix it or skip it with ZOO_BLOCK_PLUGINS={impl.plugin_name}.")


def describe_failure(exc: BaseException) -> str:
    """Why a plugin failed, in one line; sys.exit() in a plugin is a failure like any other, never an exit."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


def _register(pm, records, blocked, name, source, location, load, version=None) -> None:
    if name in blocked:
        return
    before = set(sys.modules)
    started = time.perf_counter()
    try:
        module = load()
    except (Exception, SystemExit) as exc:
        records.append(PluginRecord(name, source, location, version, error=describe_failure(exc),
                                    import_s=time.perf_counter() - started))
        return
    import_s = time.perf_counter() - started
    heavy = [m for m in HEAVY_MODULES if m in sys.modules and m not in before]
    try:
        if pm.is_registered(module) or pm.has_plugin(name):
            raise RuntimeError(f"a plugin named '{name}' is already loaded")
        pm.register(module, name=name)
    except (Exception, SystemExit) as exc:  # a broken plugin must not stop the others, nor end the command
        records.append(PluginRecord(name, source, location, version, error=describe_failure(exc),
                                    import_s=import_s, heavy=heavy))
        return
    hooks = _hooks_of(pm, module)
    valid = set(hook_names())
    records.append(PluginRecord(name, source, location, version, hooks=[h for h in hooks if h in valid],
                                import_s=import_s, heavy=heavy, unknown_hooks=[h for h in hooks if h not in valid]))


def _load_file(name: str, path: Path):
    module_name = f"zoo_dir_plugin_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def build_plugins(*, autoload: Optional[bool] = None, plugin_dirs: Optional[list[str]] = None) -> Plugins:
    """A fresh manager. ``autoload`` defaults to not ZOO_DISABLE_PLUGIN_AUTOLOAD; tests call this directly."""
    from zoo import __version__

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    records: list[PluginRecord] = []
    blocked = {b.strip() for b in os.environ.get("ZOO_BLOCK_PLUGINS", "").split(",") if b.strip()}
    if autoload is None:
        autoload = not _env_flag("ZOO_DISABLE_PLUGIN_AUTOLOAD")

    for mod in BUILTIN_PLUGINS:
        _register(pm, records, blocked, mod, "built-in", f"{BUILTIN_PACKAGE}.{mod}",
                  lambda mod=mod: importlib.import_module(f"{BUILTIN_PACKAGE}.{mod}"), __version__)

    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            _register(pm, records, blocked, ep.name, "entry point", f"{ep.value} ({dist.name if dist else '?'})",
                      ep.load, dist.version if dist else None)
        if plugin_dirs is None:
            plugin_dirs = [d for d in os.environ.get("ZOO_PLUGINS_DIR", "").split(os.pathsep) if d]
        for directory in plugin_dirs:
            if not Path(directory).expanduser().is_dir():
                records.append(PluginRecord(directory, "directory", directory,
                                            error="this ZOO_PLUGINS_DIR folder does not exist"))
                continue
            for path in sorted(Path(directory).expanduser().glob("*.py")):
                if path.name.startswith("_"):
                    continue
                _register(pm, records, blocked, path.stem, "directory", str(path),
                          lambda path=path: _load_file(path.stem, path))
    return Plugins(pm, records, frozenset(blocked), autoload)


@lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The CLI's one cached manager, loaded once per process."""
    return build_plugins()


def reset() -> None:
    """Forget the cached manager (tests call this so each test sees the environment it sets)."""
    get_plugins.cache_clear()
