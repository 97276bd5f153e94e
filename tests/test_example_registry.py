"""registry.db.example: the committed registry made by zoo works read-only, out of the box, and stays unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "registry.db.example"


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="registry.db.example is not in this checkout")
def test_example_registry_lists_and_compares_without_changing(cli):
    before = EXAMPLE.read_bytes()
    runs = json.loads(cli("--registry", EXAMPLE, "list-runs", "--format", "json").output)
    assert sorted(r["model"] for r in runs) == ["alexnet", "resnet18", "resnet34", "resnet50", "tinycnn"]
    assert all(r["status"] == "completed" for r in runs)
    result = cli("--registry", EXAMPLE, "compare", "--metric", "accuracy", "--format", "json")
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)
    values = [r["value"] for r in ranked]
    assert {r["metric"] for r in ranked} == {"test_accuracy"}
    assert values == sorted(values, reverse=True) and len(values) == 5
    assert cli("--registry", EXAMPLE, "show", runs[0]["id"]).exit_code == 0
    assert EXAMPLE.read_bytes() == before
    assert not Path(f"{EXAMPLE}-wal").exists() and not Path(f"{EXAMPLE}-journal").exists()
