"""Input a hostile user can type (issue 17): in-memory registries, huge numbers, NaN options, giant grids,
broken config files and environment values. Each is one clear line and exit 1, before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zoo.store import Registry


def one_line(result, fragment: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Unexpected" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0], result.output
    return lines[0]


# ----------------------------------------------------------------------------- 2: registries that keep nothing
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:", ":memory:",
                                 "sqlite:///file::memory:?uri=true", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_registry_is_refused_before_any_work(cli, make_images, monkeypatch, tmp_path, url):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_REGISTRY", url)
    data = make_images({"cat": 4, "dog": 4}, size=16)
    one_line(cli("train", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "16"),
             "is an in-memory database")
    assert not (tmp_path / "zoo-artifacts").exists()
    one_line(cli("list-runs"), "is an in-memory database")
