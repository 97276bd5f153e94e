"""Built-in plugin: every timm (PyTorch Image Models) architecture as ``timm/NAME``, with its own preprocessing.

Enabled by installing timm (``pip install "zoo-vision[timm]"``); without it the plugin registers nothing.

Listing costs no torch: ``import timm`` imports torch and torchvision (seconds), so the names and pretrained
configurations are read from a catalog: ``timm_catalog.json.gz`` beside this file (made by
``tools/timm_catalog.py`` for the timm version it names), or, for another timm version, from
``$ZOO_CACHE/timm/catalog-<timm version>.json``, which the first listing writes by running this module in a child
process (``python -m zoo_builtin_plugins.timm_models catalog PATH``).

timm does not know a model's parameter count without building it: ``zoo models timm/NAME`` and
``zoo models ... --count`` count them on torch's meta device in a child process, once, cached in
``$ZOO_CACHE/timm/params-<timm version>.json``.

``--pretrained`` never downloads: the weights are read from the local Hugging Face cache, or the error says where
to put them.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import zoo
from zoo.errors import ZooError
from zoo.preprocess import INTERPOLATIONS, Preprocess

if TYPE_CHECKING:
    from torch import nn

PREFIX = "timm/"
SHIPPED_CATALOG = Path(__file__).with_name("timm_catalog.json.gz")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a Hugging Face repository
MIN_SIZE = 32  # convolutional timm models reduce by 32 at most; fixed-size ones (ViTs) need their own size


def timm_version() -> Optional[str]:
    """The installed timm's version, read from its metadata (timm itself is not imported), or None."""
    try:
        return version("timm")
    except PackageNotFoundError:
        return None


def cache_dir() -> Path:
    from zoo.config import cache_root  # not zoo.data: listing stays light

    return cache_root() / "timm"


def _write_json(path: Path, payload: Any) -> None:
    """Atomically (temporary file, then rename): a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, path)


def _read_json(path: Path) -> Optional[dict]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as handle:
                return json.load(handle)
        return json.loads(path.read_text())
    except (OSError, ValueError, EOFError):
        return None


# ---------------------------------------------------------------------------------------------------- catalog


def make_catalog() -> dict[str, Any]:
    """What zoo needs of every timm architecture, from timm's own registry (imports timm, hence torch)."""
    import timm
    from timm.models import get_pretrained_cfg

    family = {name: module for module in timm.list_modules() for name in timm.list_models(module=module)}
    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    models = {}
    for name in timm.list_models():
        cfg = get_pretrained_cfg(name)  # the default tag's configuration
        c = cfg.to_dict() if cfg is not None else {}
        models[name] = {
            "family": family.get(name, ""), "input_size": c.get("input_size"),
            "min_input_size": c.get("min_input_size"), "fixed_input_size": bool(c.get("fixed_input_size")),
            "mean": c.get("mean"), "std": c.get("std"), "interpolation": c.get("interpolation"),
            "crop_pct": c.get("crop_pct"), "tags": tags.get(name, []), "hf_hub_id": c.get("hf_hub_id"),
            "url": c.get("url"), "license": c.get("license"),
        }
    return {"timm": timm.__version__, "models": models}


def load_catalog(timm: str) -> dict[str, Any]:
    """The catalog of timm ``timm``: the shipped one, else the cached one, else made in a child process (which
    imports torch, this process does not) and cached."""
    for path in (SHIPPED_CATALOG, cache_dir() / f"catalog-{timm}.json"):
        catalog = _read_json(path)
        if catalog is not None and catalog.get("timm") == timm:
            return catalog
    done = subprocess.run([sys.executable, "-m", "zoo_builtin_plugins.timm_models", "catalog", str(path)],
                          capture_output=True, text=True)
    catalog = _read_json(path)
    if done.returncode != 0 or catalog is None:
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        raise ZooError(f"Cannot list timm {timm}'s models ({lines[-1][:200] if lines else 'no output'}); "
                       f"reinstall timm, or skip the plugin with ZOO_BLOCK_PLUGINS=timm_models.")
    return catalog


def known_params(timm: str) -> dict[str, int]:
    """Parameter counts at 1000 classes counted so far (``count_params``); none when the cache is unusable."""
    try:
        return _read_json(cache_dir() / f"params-{timm}.json") or {}
    except ZooError:  # ZOO_CACHE is not a folder: the command that needs the cache says so
        return {}


def count_params(names: list[str]) -> dict[str, int]:
    """Count the parameters at 1000 classes of the timm models ``names`` (timm/NAME) on the meta device, in one
    child process (no torch here); the counts are cached. Models timm cannot build on the meta device are left out."""
    timm = timm_version()
    if timm is None or not names:
        return {}
    archs = [n[len(PREFIX):] if n.startswith(PREFIX) else n for n in names]
    done = subprocess.run([sys.executable, "-m", "zoo_builtin_plugins.timm_models", "count", *archs],
                          capture_output=True, text=True)
    counts = {}
    for line in done.stdout.splitlines():
        arch, _, count = line.partition(" ")
        if count.isdigit():
            counts[arch] = int(count)
    if done.returncode != 0 and not counts:
        lines = (done.stderr or "no output").strip().splitlines()
        raise ZooError(f"Cannot count the parameters of {', '.join(names[:3])}: "
                       f"{lines[-1][:200] if lines else 'no output'}.")
    path = cache_dir() / f"params-{timm}.json"
    try:
        _write_json(path, {**(_read_json(path) or {}), **counts})
    except OSError:
        pass  # an unwritable cache: counted again next time
    return {PREFIX + arch: count for arch, count in counts.items()}


# ----------------------------------------------------------------------------------------------- registering


def preprocess_of(entry: dict[str, Any]) -> Preprocess:
    """The model's normalisation and eval transform, as its pretrained configuration declares them (what timm
    does not declare, or zoo cannot do, stays at ImageNet's and torchvision's)."""
    key = tuple(tuple(v) if isinstance(v, list) else v
                for v in (entry.get("mean"), entry.get("std"), entry.get("interpolation"), entry.get("crop_pct")))
    return _preprocess(key)


@lru_cache(maxsize=None)  # a few dozen distinct configurations among the thousand models
def _preprocess(key: tuple) -> Preprocess:
    mean, std, interpolation, crop = key
    default = Preprocess()
    if not (isinstance(mean, tuple) and isinstance(std, tuple) and len(mean) == 3 and len(std) == 3 and min(std) > 0):
        mean, std = default.mean, default.std
    return Preprocess(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),  # type: ignore[arg-type]
                      interpolation=interpolation if interpolation in INTERPOLATIONS else default.interpolation,
                      crop_fraction=float(crop) if isinstance(crop, (int, float)) and 0 < crop <= 1
                      else default.crop_fraction)


def sizes_of(entry: dict[str, Any]) -> tuple[int, int]:
    """(min_size, default_size): a fixed-size model (most ViTs) takes only its own size."""
    size = entry.get("input_size") or [3, 224, 224]
    default = int(size[-1])
    if entry.get("fixed_input_size"):
        return default, default
    least = entry.get("min_input_size")
    return min(default, int(least[-1]) if least else MIN_SIZE), default


class TimmBuilder:
    """``timm.create_model`` for one architecture, keyword-only as zoo calls builders."""

    def __init__(self, arch: str, entry: dict[str, Any]):
        self.arch, self.entry = arch, entry
        self.__name__ = f"build_timm_{arch}"

    def __call__(self, *, num_classes: int, pretrained: bool = False) -> "nn.Module":
        import timm

        if not pretrained:
            return timm.create_model(self.arch, num_classes=num_classes)
        weights = local_weights(self.arch, self.entry)
        overlay = {"file": weights, "source": "timm"}  # this file, never the hub
        model = timm.create_model(self.arch, pretrained=True, pretrained_cfg_overlay=overlay)
        model.reset_classifier(num_classes)  # a fresh classifier for the run's classes; the rest pretrained
        return model


def local_weights(arch: str, entry: dict[str, Any]) -> str:
    """The default pretrained weights file of ``arch`` in the local caches (never downloaded), else a ZooError
    that says where to put it."""
    hub_id, url = entry.get("hf_hub_id"), entry.get("url")
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for filename in WEIGHT_FILES:
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str) and os.path.isfile(path):
                return path
        folder = os.path.join(constants.HF_HUB_CACHE, "models--" + hub_id.replace("/", "--"))
        raise ZooError(f"The pretrained weights of timm/{arch} ({hub_id}) are not in the local Hugging Face cache "
                       f"(zoo never downloads): on a machine online run `hf download {hub_id}` and copy {folder} "
                       f"here (HF_HOME moves the cache), or pass a local weights file with --weights FILE.")
    if url:
        import torch.hub

        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
        if os.path.isfile(path):
            return path
        raise ZooError(f"The pretrained weights of timm/{arch} are not in torch hub's cache (zoo never downloads): "
                       f"copy {os.path.basename(path)} from {url} to {path}, or pass a local weights file with "
                       f"--weights FILE.")
    raise ZooError(f"timm/{arch} has no pretrained weights; train it with --no-pretrained.")


@zoo.hookimpl
def register_models(register):
    timm = timm_version()
    if timm is None:  # the extra is not installed: nothing to register, nothing imported
        return
    try:
        catalog = load_catalog(timm)
    except ZooError as exc:  # a broken timm install must not take the other plugins' models with it
        from zoo.errors import print_warning

        print_warning(str(exc))
        return
    params = known_params(timm)
    for arch, entry in catalog["models"].items():
        min_size, default_size = sizes_of(entry)
        tags = tuple(entry.get("tags") or ())
        register(PREFIX + arch, TimmBuilder(arch, entry), family=entry.get("family") or arch.split("_")[0],
                 description=f"timm {arch}" + (f", weights {', '.join(tags[:3])}" if tags else ""),
                 min_size=min_size, default_size=default_size, pretrained=bool(tags), params=params.get(arch),
                 preprocess=preprocess_of(entry), source="timm", tags=tags)


def _main(argv: list[str]) -> None:
    """``catalog PATH``: write the catalog; ``count ARCH...``: print 'ARCH COUNT' lines (parameters at 1000
    classes)."""
    if argv[:1] == ["catalog"] and len(argv) == 2:
        _write_json(Path(argv[1]), make_catalog())
    elif argv[:1] == ["count"]:
        import timm
        import torch

        for arch in argv[1:]:
            try:
                with torch.device("meta"):  # no memory, no initialisation work: shapes only
                    model = timm.create_model(arch)
            except Exception as exc:  # left unknown; the others are still counted
                print(f"{arch}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                continue
            print(arch, sum(p.numel() for p in model.parameters()), flush=True)
    else:
        raise SystemExit("usage: python -m zoo_builtin_plugins.timm_models catalog PATH | count ARCH...")


if __name__ == "__main__":
    _main(sys.argv[1:])
