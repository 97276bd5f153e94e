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


# ----------------------------------------------------------------------------- 6: numbers past every bound
@pytest.mark.parametrize("args, fragment", [
    (("lr-find", "tinycnn", "--data", "demo", "--end", "inf"), "--end"),
    (("lr-find", "tinycnn", "--data", "demo", "--steps", "10000000"), "--steps"),
    (("lr-find", "tinycnn", "--data", "demo", "--batch-size", "10000000"), "--batch-size"),
    (("evaluate", "1", "--batch-size", "10000000"), "--batch-size"),
])
def test_lr_find_and_evaluate_bounds_are_one_line(cli, args, fragment):
    one_line(cli(*args), fragment)


def test_huge_ids_limits_ages_and_too_many_tag_filters_are_one_line(cli):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        reg.start_run(model="tinycnn", plugin="builtin", params={})
    huge = "9" * 30
    one_line(cli("show", huge), f"No run '{huge}'")
    one_line(cli("delete", huge, "--yes"), f"No run '{huge}'")
    one_line(cli("list-runs", "--limit", huge), "--limit must be at most 1,000,000,000")
    one_line(cli("list-runs", "--since", "99999999d"), "Bad --since '99999999d': at most 100 years back")
    one_line(cli("list-runs", "--since", "9999-12-31T23:59:59-05:00"), "Bad --since")
    tags = [arg for i in range(1500) for arg in ("--tag", f"k{i}=v")]
    one_line(cli("list-runs", *tags), "1500 --tag filters given: at most 50")
    assert cli("list-runs", "--limit", "1000").exit_code == 0


# ----------------------------------------------------------------------------- 8: options checked before any work
BAD_OPTIONS = [
    (("--lr", "nan"), "--lr nan: must be a finite number"),
    (("--lr", "inf"), "--lr inf: must be a finite number"),
    (("--lr", "1e308"), "--lr 1e+308: must be at most 10.0"),
    (("--lr", "1e999"), "--lr inf: must be a finite number"),
    (("--momentum", "nan"), "--momentum nan: must be a finite number"),
    (("--weight-decay", "1e300"), "--weight-decay 1e+300: must be at most 1.0"),
    (("--min-delta", "-inf"), "--min-delta -inf: must be a finite number"),
    (("--warmup-epochs", "1e308"), "--warmup-epochs 1e+308: must be at most 100,000"),
    (("--seed", "9" * 30), "--seed 999999999999999999999999999999: must be at most"),
    (("--batch-size", "9" * 30), "must be at most 1,000,000"),
    (("--optimizer", "nesterov", "--momentum", "0"), "--optimizer nesterov needs --momentum above 0"),
]


def test_every_number_option_is_finite_and_sane_before_any_work(cli, tmp_path):
    for args, message in BAD_OPTIONS:
        for mode in ((), ("--dry-run",), ("--queue",)):
            one_line(cli("train", "tinycnn", "--data", tmp_path / "nowhere", *args, *mode), message)
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()  # nothing queued, nothing recorded


# ----------------------------------------------------------------------------- 9: grid size
def test_a_grid_over_the_stated_size_is_refused_before_it_is_made(cli, tmp_path):
    hundred = lambda start: ",".join(str(start + i) for i in range(100))  # noqa: E731
    axes = ("--seed", hundred(0), "--batch-size", hundred(1), "--epochs", hundred(1))
    for mode in ("--dry-run", "--queue"):
        one_line(cli("train", "tinycnn", "--data", tmp_path, *axes, mode),
                 "This command makes 1,000,000 runs, more than --max-runs 1,000: pass --max-runs 1000000")
    one_line(cli("train", "tinycnn", "alexnet", "--data", tmp_path, "--seed", "1,2", "--queue", "--max-runs", "3"),
             "makes 4 runs, more than --max-runs 3")
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()
    queued = cli("train", "tinycnn", "alexnet", "--data", tmp_path, "--seed", "1,2", "--queue", "--max-runs", "4")
    assert queued.exit_code == 0, queued.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg, reg.connect() as conn:
        from zoo.store import queries

        assert queries.list_runs(conn, queries.RunFilter(), limit=1, host=reg.host)[1] == 4


# ----------------------------------------------------------------------------- 10: messages that name the culprit
def test_a_data_folder_deleted_while_streaming_is_one_line_naming_a_file(cli, make_images, monkeypatch):
    import shutil

    from zoo.cli import progress

    data = make_images({"cat": 8, "dog": 8}, size=16)
    real_line = progress.Display.line

    def line(self, text):  # the folder goes once epoch 1 is done
        real_line(self, text)
        if "epoch 1/" in str(text) and Path(data).exists():
            shutil.rmtree(data)

    monkeypatch.setattr(progress.Display, "line", line)
    monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")  # stream from disk, through a loader process
    result = cli("train", "tinycnn", "--data", data, "--epochs", "3", "--image-size", "16", "--workers", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        run = reg.get_run(1)
    assert run.status == "failed" and run.error.startswith(f"Cannot read {data}") and "\n" not in run.error
    assert "while training" in run.error and "Original Traceback" not in run.error


def test_config_and_environment_values_that_cannot_be_used_are_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "zoo.toml"
    config.write_bytes(b'registry = "caf\xe9.db"\n')
    one_line(cli("list-runs"), f"{config} is not valid TOML: not UTF-8 text")
    config.unlink()
    config.mkdir()
    one_line(cli("list-runs"), f"{config} is a folder, not a config file")
    config.rmdir()
    for value in ("1e999", "-5G", "nan", "lots"):
        monkeypatch.setenv("ZOO_CACHE_MEMORY", value)
        one_line(cli("train", "tinycnn", "--data", "demo", "--epochs", "1"), f"ZOO_CACHE_MEMORY='{value}' is not a size")
    monkeypatch.delenv("ZOO_CACHE_MEMORY")
    monkeypatch.setenv("ZOO_CACHE", "/dev/null")
    one_line(cli("train", "tinycnn", "--data", "demo", "--epochs", "1"), "ZOO_CACHE=/dev/null is not a folder")


# ----------------------------------------------------------------------------- 11: tag length, export to a device
def test_tag_keys_and_values_are_capped_at_200_characters(cli, make_images):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        reg.start_run(model="tinycnn", plugin="builtin", params={})
    one_line(cli("tag", "1", "k=" + "v" * 201), "A tag value has at most 200 characters (this one has 201)")
    one_line(cli("tag", "1", "k" * 201 + "=v"), "A tag key has at most 200 characters")
    one_line(cli("train", "tinycnn", "--data", "x", "--tag", "k=" + "v" * 5000, "--dry-run"),
             "A tag value has at most 200 characters (this one has 5000)")
    assert cli("tag", "1", "k=" + "v" * 200).exit_code == 0
