"""Fair comparisons (issue 12, item 4): --data on list-runs, compare and plot; compare ranks each dataset on its
own; plot takes compare's filters and --metric loss|accuracy."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from test_cli_runs import add_run, assert_one_line_error
from zoo.store import Registry


@pytest.fixture
def datasets(tmp_path) -> dict[str, int]:
    """Runs on two datasets: 'demo' (a dataset plugin's folder in the cache) and a folder ./photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    demo = tmp_path / "cache" / "datasets" / "demo"

    def on(reg, model, acc, data, path, fp, **kw):
        run = add_run(reg, model, params={"lr": kw.pop("lr", 0.01), "data": data}, acc=acc, loss=1 - acc,
                      dataset_fp=fp, **kw)
        reg.update_run(run, dataset_path=str(path))
        return run

    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        return {
            "demo_a": on(reg, "resnet18", 0.95, "demo", demo, "aaaa1111demo0000"),
            "demo_b": on(reg, "alexnet", 0.60, "Demo", demo, "aaaa1111demo0000", lr=0.1),
            "photos_a": on(reg, "resnet18", 0.70, str(photos), photos, "bbbb2222photos00"),
            "photos_b": on(reg, "tinycnn", 0.99, "./photos", photos, "bbbb2222photos00"),
            "photos_c": on(reg, "tinycnn", 0.50, "./photos", photos, "bbbb2222photos00", lr=0.5),
        }


def ids(result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [r["id"] for r in json.loads(result.stdout)]


def test_list_runs_data_by_name_path_or_fingerprint(cli, datasets, tmp_path, monkeypatch):
    demo = {datasets["demo_a"], datasets["demo_b"]}
    photos = {datasets["photos_a"], datasets["photos_b"], datasets["photos_c"]}
    assert set(ids(cli("list-runs", "--data", "demo", "-f", "json"))) == demo
    assert set(ids(cli("list-runs", "--data", "DEMO", "-f", "json"))) == demo  # names in any case
    assert set(ids(cli("list-runs", "--data", tmp_path / "photos", "-f", "json"))) == photos
    monkeypatch.chdir(tmp_path)
    assert set(ids(cli("list-runs", "--data", "photos", "-f", "json"))) == photos  # a relative folder
    assert set(ids(cli("list-runs", "--data", "./photos/", "-f", "json"))) == photos
    assert set(ids(cli("list-runs", "-d", "bbbb2222", "-f", "json"))) == photos  # a fingerprint prefix
    none = cli("list-runs", "--data", "nothing-like-it", "-f", "json")
    assert none.exit_code == 1 and json.loads(none.stdout) == []  # nothing matched: exit 1, still valid JSON
    nothing = cli("list-runs", "--data", "nothing-like-it")
    assert nothing.exit_code == 1 and "No runs match these filters" in nothing.stderr


def test_compare_ranks_each_dataset_on_its_own(cli, datasets):
    result = cli("compare")
    assert result.exit_code == 0, result.output
    assert "2 different datasets" in result.stderr
    out = result.stdout
    first, second = out.index("Dataset "), out.rindex("Dataset ")
    assert first < second and "3 runs" in out[first:second] and "2 runs" in out[second:]
    assert "photos" in out[first:second] and "demo" in out[second:]
    records = json.loads(cli("compare", "--format", "json").stdout)
    assert [(r["id"], r["rank"]) for r in records] == [
        (datasets["photos_b"], 1), (datasets["photos_a"], 2), (datasets["photos_c"], 3),
        (datasets["demo_a"], 1), (datasets["demo_b"], 2)]  # ranks restart: 0.99 and 0.95 are both first
    assert {r["dataset_fingerprint"] for r in records[:3]} == {"bbbb2222photos00"}
    rows = list(csv.DictReader(io.StringIO(cli("compare", "--format", "csv").stdout)))
    assert [r["dataset_fingerprint"] for r in rows] == ["bbbb2222photos00"] * 3 + ["aaaa1111demo0000"] * 2
    assert [r["rank"] for r in rows] == ["1", "2", "3", "1", "2"] and "param:lr" in rows[0]
    md = cli("compare", "--format", "markdown").stdout
    assert md.count("### Dataset ") == 2


def test_compare_with_data_is_one_ranking_without_a_warning(cli, datasets):
    result = cli("compare", "--data", "demo", "--format", "json")
    assert [r["id"] for r in json.loads(result.stdout)] == [datasets["demo_a"], datasets["demo_b"]]
    assert "different datasets" not in result.stderr
    table = cli("compare", "--data", "aaaa1111")
    assert "Dataset " not in table.stdout and "Ranked by" in table.stdout
    nothing = cli("compare", "--data", "elsewhere")
    assert nothing.exit_code == 1 and "No runs with test_accuracy match" in nothing.stderr


def test_compare_of_runs_named_on_two_datasets_is_grouped_too(cli, datasets):
    records = json.loads(cli("compare", datasets["demo_b"], datasets["photos_c"], "-f", "json").stdout)
    assert [(r["id"], r["rank"]) for r in records] == [(datasets["photos_c"], 1), (datasets["demo_b"], 1)] or \
        [(r["id"], r["rank"]) for r in records] == [(datasets["demo_b"], 1), (datasets["photos_c"], 1)]


def test_plot_takes_compare_filters_and_the_curves_to_draw(cli, datasets, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import zoo.render

    drawn = {}

    def fake_plot(views, histories, output, keys=("train_loss", "val_loss"), log_y=False):
        drawn.update(ids=[v.id for v in views], keys=keys, series=histories)
        output.write_bytes(b"png")

    monkeypatch.setattr(zoo.render, "plot_losses", fake_plot)
    out = tmp_path / "acc.png"
    result = cli("plot", "--data", tmp_path / "photos", "--metric", "accuracy",
                 "--top", "2", "-o", out)
    assert result.exit_code == 0, result.output
    assert drawn["ids"] == [datasets["photos_b"], datasets["photos_a"]]  # the best two of that dataset
    assert drawn["keys"] == ("train_acc", "val_acc")
    assert set(drawn["series"][datasets["photos_b"]]) == {"train_acc", "val_acc"}
    result = cli("plot", "--model", "resnet18", "--tag", "exp=none", "-o", out)  # the filters narrow, to nothing
    assert result.exit_code == 1 and "No runs match these filters" in result.output
    result = cli("plot", "--model", "tinycnn", "--rank-by", "loss", "--status", "completed", "-o", out)
    assert result.exit_code == 0, result.output
    assert drawn["ids"] == [datasets["photos_b"], datasets["photos_c"]] and drawn["keys"] == ("train_loss", "val_loss")
    result = cli("plot", "-o", out)  # two datasets in one figure: said
    assert "2 different datasets" in result.stderr
    assert_one_line_error(subprocess.run([sys.executable, "-m", "zoo", "plot", "--metric", "f1", "-o", str(out)],
                                         capture_output=True, text=True, timeout=60), "--metric", "loss, accuracy")


def test_plot_accuracy_writes_a_real_figure(cli, datasets, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "acc.png"
    result = cli("plot", "--data", "demo", "--metric", "accuracy", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_filters_import_no_torch(datasets, tmp_path):
    from conftest import TORCH_PROBE as probe

    for args in (["list-runs", "--data", "demo"], ["compare"], ["compare", "--data", str(tmp_path / "photos")],
                 ["plot", "--data", "demo", "--metric", "accuracy", "-o", str(tmp_path / "x.png")]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().endswith("NO-TORCH"), (args, done.stderr)
