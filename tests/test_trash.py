"""Soft delete through the real CLI: zoo delete moves runs and artifacts to the trash, restore, gc, --deleted."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from test_cli_runs import add_run

from zoo.store import Registry


def registry_path() -> Path:
    return Path(os.environ["ZOO_REGISTRY"])


def make_runs() -> list[int]:
    with Registry.open(registry_path()) as reg:
        ids = [add_run(reg, model, params={"lr": lr}, acc=acc, loss=0.3, tags={"owner": owner})
               for model, lr, acc, owner in (("resnet18", 0.01, 0.9, "alice"), ("alexnet", 0.1, 0.8, "bob"),
                                             ("tinycnn", 0.5, 0.5, "bob"))]
        folder = reg.run_artifacts_dir(ids[0])
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"weights")
        reg.update_run(ids[0], checkpoint=str(folder / "best.pt"))
    return ids


def listed(cli, *args) -> list[int]:
    result = cli("list-runs", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return [r["id"] for r in json.loads(result.stdout)]


def test_delete_hides_runs_everywhere_restore_brings_them_back(cli):
    a, b, c = make_runs()
    artifacts = registry_path().parent / "registry-artifacts"
    result = cli("delete", str(a), "--yes")
    assert result.exit_code == 0 and "Deleted 1 run and 1 artifact folder" in result.stdout
    assert not (artifacts / f"run-{a}").exists() and (artifacts / ".trash" / f"run-{a}" / "best.pt").exists()
    assert listed(cli) == [c, b] and listed(cli, "--deleted") == [a]
    compared = json.loads(cli("compare", "--format", "json").stdout)
    assert [r["id"] for r in compared] == [b, c]
    shown = cli("show", str(a))
    assert shown.exit_code == 1 and f"zoo restore {a}" in shown.output
    assert cli("compare", str(a)).exit_code == 1

    result = cli("restore", str(a))
    assert result.exit_code == 0 and "Restored 1 run and 1 artifact folder" in result.stdout
    assert (artifacts / f"run-{a}" / "best.pt").read_bytes() == b"weights"
    assert listed(cli) == [c, b, a] and listed(cli, "--deleted") == []
    again = cli("restore", str(a))
    assert again.exit_code == 1 and "not in the trash" in again.output


def test_delete_where_then_gc_removes_for_good_and_ids_are_never_reused(cli):
    a, b, c = make_runs()
    result = cli("delete", "--where", "tag.owner = bob and accuracy < 0.9", "--yes")
    assert result.exit_code == 0 and "Deleted 2 runs" in result.stdout
    assert listed(cli) == [a]
    result = cli("gc", "--older-than", "1d", "--yes")  # deleted just now: kept
    assert result.exit_code == 0 and "No run in the trash was deleted more than 1d ago" in result.stdout
    result = cli("gc", "--yes")
    assert result.exit_code == 0 and "Deleted 2 runs for good" in result.stdout
    con = sqlite3.connect(registry_path())
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM history WHERE run_id IN (?, ?)", (b, c)).fetchone()[0] == 0
    con.close()
    assert cli("gc", "--yes").stdout.strip() == "The trash is empty."
    with Registry.open(registry_path()) as reg:
        assert reg.start_run(model="m", plugin="p", params={}) == c + 1


def test_gc_older_than_uses_the_deletion_time(cli):
    a, b, c = make_runs()
    assert cli("delete", str(b), str(c), "--yes").exit_code == 0
    con = sqlite3.connect(registry_path())
    con.execute("UPDATE trash SET deleted_at = datetime(deleted_at, '-40 days') WHERE run_id = ?", (b,))
    con.commit()
    con.close()
    result = cli("gc", "--older-than", "30d", "--yes")
    assert result.exit_code == 0 and "Deleted 1 run for good" in result.stdout
    assert listed(cli, "--deleted") == [c]
    bad = cli("gc", "--older-than", "soon")
    assert bad.exit_code == 1 and "--older-than" in bad.output


def test_delete_without_runs_or_filter_and_nothing_matching(cli):
    make_runs()
    assert cli("delete", "--yes").exit_code == 1
    result = cli("delete", "--where", "accuracy > 0.99", "--yes")
    assert result.exit_code == 0 and "nothing deleted" in result.stdout
    assert len(listed(cli)) == 3
