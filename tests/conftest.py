"""Shared fixtures: an isolated environment per test, tiny image folders, and the real CLI."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postgres_server import pg_url, postgres_server, registry_location  # noqa: F401  (fixtures)

# Started in the background (`pytest &` in a script), the shell leaves SIGINT ignored, and an ignored signal stays
# ignored in every process started from here: the tests that press Ctrl-C on a zoo process would find it ignored
# (a run that finishes instead of being interrupted). Handled, it is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (generated datasets, weights) shared by the whole session."""
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path, cache_dir):
    """No installed third-party plugins, a fresh plugin manager, a registry in tmp_path."""
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))  # never the user's own zoo.toml
    for var in ("ZOO_PLUGINS_DIR", "ZOO_BLOCK_PLUGINS", "ZOO_ARTIFACTS", "ZOO_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.db"))
    monkeypatch.setenv("ZOO_CACHE", str(cache_dir))
    monkeypatch.setenv("COLUMNS", "200")
    import zoo.plugins
    from zoo.cli.app import state

    zoo.plugins.reset()
    state.registry = None
    yield
    zoo.plugins.reset()
    state.registry = None


# `python -c TORCH_PROBE ARGS...` runs the real `zoo ARGS...` and says on stderr whether it imported torch.
TORCH_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr))\n"
    "from zoo.cli import main\n"
    "sys.argv = ['zoo'] + sys.argv[1:]\n"
    "main()\n"
)


def write_images(root: Path, counts: dict[str, int], size: int = 32, seed: int = 0, ext: str = "jpg") -> Path:
    """An ImageFolder tree whose classes differ visibly (colour and stripe direction), so a tiny CNN learns it."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    palette = [(220, 60, 50), (50, 90, 220), (60, 190, 80), (230, 200, 40), (160, 60, 200)]
    for index, (cls, n) in enumerate(sorted(counts.items())):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        base = palette[index % len(palette)]
        for i in range(n):
            colour = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base)
            img = Image.new("RGB", (size + rng.randint(0, 8), size + rng.randint(0, 8)), colour)
            draw = ImageDraw.Draw(img)
            step = 6 + rng.randint(0, 3)
            for k in range(0, img.width + img.height, step):
                if index % 2:
                    draw.line([(k, 0), (k, img.height)], fill=(255, 255, 255), width=2)
                else:
                    draw.line([(0, k), (img.width, k)], fill=(0, 0, 0), width=2)
            img.save(folder / f"{cls}_{i:03d}.{ext}")
    return root


@pytest.fixture
def make_images(tmp_path):
    """make_images({"cat": 20, "dog": 20}, size=32) -> Path of a new image folder under tmp_path."""
    counter = {"n": 0}

    def make(counts=None, size: int = 32, seed: int = 0, name: str | None = None) -> Path:
        counter["n"] += 1
        root = tmp_path / (name or f"images{counter['n']}")
        return write_images(root, counts or {"cat": 20, "dog": 20}, size=size, seed=seed)

    return make


@pytest.fixture
def cli():
    """cli("list-runs", "--format", "json") -> click Result, through the real Typer app."""
    from zoo.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def ctrl_c_after_epoch(monkeypatch):
    """``undo = ctrl_c_after_epoch(2)``: Ctrl-C right after epoch 2's line is shown (the epoch is recorded by then)
    in every training of this test until ``undo()``."""
    from zoo.cli import progress

    real_line = progress.Display.line

    def arm(epoch: int):
        def line(self, text):
            real_line(self, text)
            if f"epoch {epoch}/" in str(text):
                raise KeyboardInterrupt

        monkeypatch.setattr(progress.Display, "line", line)
        return lambda: monkeypatch.setattr(progress.Display, "line", real_line)

    return arm
