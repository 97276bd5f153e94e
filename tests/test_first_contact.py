"""What a new user meets first (issue 23): the README's commands as written, and the small frictions around them.

One test (or a few) per point of the issue, through the real CLI; the ui's table width is in test_web_browser.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_cli_runs import add_run
from zoo.store import Registry

ROOT = Path(__file__).resolve().parents[1]
BASE = {"lr": 0.01, "batch_size": 8, "seed": 42, "data": "/data/pets"}


def registry_path() -> Path:
    import os

    return Path(os.environ["ZOO_REGISTRY"])


# ------------------------------------------------------------------------------- 6: run names where ids go


def test_a_unique_run_name_works_wherever_a_run_id_does(cli):
    with Registry.open(str(registry_path())) as reg:
        first = add_run(reg, "tinycnn", params=BASE, acc=0.9, loss=0.3)
        second = add_run(reg, "resnet18", params=BASE, acc=0.8, loss=0.4)
        twins = [add_run(reg, "tinycnn", params=BASE, acc=0.7, loss=0.5, name="twin") for _ in range(2)]
    assert cli("rename", first, "sgd-base").exit_code == 0
    shown = cli("show", "sgd-base", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == first
    assert cli("tag", "sgd-base", "k=v").exit_code == 0
    diff = cli("diff", "sgd-base", second)
    assert diff.exit_code == 0 and "resnet18" in diff.stdout
    ambiguous = cli("show", "twin")
    assert ambiguous.exit_code == 1
    assert f"runs {twins[0]} (tinycnn), {twins[1]} (tinycnn) have it" in ambiguous.stderr
    unknown = cli("show", "nobody")
    assert unknown.exit_code == 1 and "No run is named 'nobody'" in unknown.stderr


# ------------------------------------------------------------------------------- 8: onnxruntime installed


def test_the_onnx_extra_installs_what_the_export_snippet_imports():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("[")[0].strip() for req in extras["onnx"]}
    assert {"onnx", "onnxscript", "onnxruntime"} <= names
    assert "onnxruntime" in {req.split(">")[0].strip() for req in extras["dev"]}
