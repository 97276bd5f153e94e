"""Runs after the fact (issue 12, item 5): zoo tag, untag, rename, note and diff through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_cli_runs import add_run, assert_one_line_error, digest, zoo
from zoo.store import Registry


@pytest.fixture
def two(tmp_path) -> tuple[int, int]:
    """Two finished runs that differ in lr and test metrics, the first tagged exp=base."""
    base = {"epochs": 4, "batch_size": 16, "optimizer": "adamw"}
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        a = add_run(reg, "resnet18", params={**base, "lr": 0.01}, acc=0.90, loss=0.30, tags={"exp": "base"})
        b = add_run(reg, "resnet18", params={**base, "lr": 0.1}, acc=0.80, loss=0.20, dataset_fp="fp-other")
    return a, b


def tags_of(run: int) -> dict[str, str]:
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        view = reg.get_run(run)
        return {**view.tags, **view.system_tags}


def test_tag_adds_and_replaces_and_list_runs_filters_on_it(cli, two):
    a, b = two
    result = cli("tag", b, "exp=base", "owner=ann")
    assert result.exit_code == 0, result.output
    assert "exp=base, owner=ann" in result.output
    assert cli("tag", a, "exp=second").exit_code == 0  # a key it has gets the new value
    assert tags_of(a) == {"exp": "second"} and tags_of(b) == {"exp": "base", "owner": "ann"}
    listed = json.loads(cli("list-runs", "--tag", "exp=base", "--format", "json").stdout)
    assert [r["id"] for r in listed] == [b]


def test_untag_removes_and_names_what_was_not_there(cli, two):
    a, _ = two
    cli("tag", a, "owner=ann")
    result = cli("untag", a, "owner", "nope")
    assert result.exit_code == 0, result.output
    assert "removed tag owner" in result.stdout and "has no tag 'nope'" in result.output
    assert tags_of(a) == {"exp": "base"}
    result = cli("untag", a, "nope")
    assert result.exit_code == 1 and "has no tag nope" in result.output and "exp" in result.output


def test_zoo_own_tags_and_bad_pairs_are_refused(two):
    a, _ = two
    before = digest()
    assert_one_line_error(zoo("tag", a, "zoo.group=x"), "zoo's own")
    assert_one_line_error(zoo("untag", a, "zoo.note"), "zoo's own")
    assert_one_line_error(zoo("tag", a, "novalue"), "key=value")
    assert_one_line_error(zoo("tag", 99, "k=v"), "No run '99'")
    assert digest() == before


def test_rename_shows_in_lists_and_empty_removes_the_name(cli, two):
    a, _ = two
    result = cli("rename", a, "baseline sgd")
    assert result.exit_code == 0 and "no name -> 'baseline sgd'" in result.output
    listed = json.loads(cli("list-runs", "--format", "json").stdout)
    assert {r["id"]: r["name"] for r in listed}[a] == "baseline sgd"
    assert cli("rename", a, "").exit_code == 0
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        assert reg.get_run(a).name is None
    assert_one_line_error(zoo("rename", a, "x" * 201), "at most 200")


def test_note_is_shown_by_show_and_kept_as_a_zoo_tag(cli, two):
    a, _ = two
    assert cli("note", a, "lr too high; diverged at epoch 4").exit_code == 0
    assert tags_of(a)["zoo.note"] == "lr too high; diverged at epoch 4"
    shown = cli("show", a)
    assert "note" in shown.output and "lr too high; diverged at epoch 4" in shown.output
    detail = json.loads(cli("show", a, "--format", "json").stdout)
    assert detail["system_tags"]["zoo.note"] == "lr too high; diverged at epoch 4"
    assert detail["tags"] == {"exp": "base"}  # the note is not one of the user's tags
    assert cli("note", a, "second thoughts").exit_code == 0  # replaces
    assert tags_of(a)["zoo.note"] == "second thoughts"
    assert cli("note", a, "").exit_code == 0
    assert "zoo.note" not in tags_of(a) and "second thoughts" not in cli("show", a).output


def test_diff_marks_what_differs(cli, two):
    a, b = two
    cli("note", a, "the first")
    result = cli("diff", a, b)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()

    def line(key: str) -> str:
        found = [x for x in lines if x.split("≠")[-1].split()[:1] == [key]]
        assert found, (key, result.stdout)
        return found[0]

    assert line("lr").lstrip().startswith("≠") and "0.01" in line("lr") and "0.1" in line("lr")
    assert not line("batch_size").lstrip().startswith("≠")
    assert line("fingerprint").lstrip().startswith("≠")  # the dataset differs
    assert line("test_accuracy").lstrip().startswith("≠") and "-0.1000" in line("test_accuracy")  # Δ column
    assert line("note").lstrip().startswith("≠") and "the first" in line("note")
    only = cli("diff", a, b, "--only-differences").stdout
    assert "lr" in only and "batch_size" not in only
    data = json.loads(cli("diff", a, b, "--format", "json").stdout)
    assert data["runs"] == [a, b]
    assert data["params"]["lr"] == {"values": [0.01, 0.1], "differs": True}
    assert data["params"]["batch_size"]["differs"] is False
    assert data["test_metrics"]["test_accuracy"]["values"] == [0.9, 0.8]


def test_diff_needs_two_runs_reads_only_and_imports_no_torch(two):
    a, b = two
    before = digest()
    assert_one_line_error(zoo("diff", a), "at least two")
    assert_one_line_error(zoo("diff", a, a), "one run only")
    assert_one_line_error(zoo("diff", a, 99), "No run '99'")
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('ORM' if 'sqlalchemy.orm' in sys.modules else 'NO-ORM', file=sys.stderr))\n"
        "atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr))\n"
        "from zoo.cli import main\n"
        "sys.argv = ['zoo', 'diff', sys.argv[1], sys.argv[2]]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(a), str(b)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-2:] == ["NO-TORCH", "NO-ORM"], done.stderr  # atexit: last first
    assert digest() == before


def test_annotating_needs_an_existing_registry(tmp_path):
    missing = tmp_path / "none.db"
    for args in (["tag", "1", "k=v"], ["untag", "1", "k"], ["rename", "1", "x"], ["note", "1", "x"]):
        assert_one_line_error(zoo("--registry", missing, *args), "No registry at")
    assert not missing.exists()
