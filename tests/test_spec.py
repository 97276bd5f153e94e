"""RunSpec: params rows written and read back (also the first release's rows), option values, grids."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.spec import (OPTIONS, Resolved, RunSpec, build_specs, default, parse_grid, parse_list, replay_values,
                      varied)

EXAMPLE = Path(__file__).resolve().parent.parent / "registry.db.example"
CPU = Resolved("cpu", "fp32", 32)


def example_rows() -> list[tuple[str, dict]]:
    with sqlite3.connect(f"file:{EXAMPLE}?mode=ro", uri=True) as conn:
        runs = conn.execute("SELECT id, model FROM runs ORDER BY id").fetchall()
        return [(model, {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM params WHERE run_id = ?",
                                                                    (run_id,))}) for run_id, model in runs]


def test_spec_imports_only_the_standard_library():
    code = ("import sys, zoo.spec, zoo.vocab, zoo.metrics; "
            "print(sorted(m for m in ('torch', 'sqlalchemy', 'typer', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_params_round_trip_keeps_the_first_release_keys():
    spec = RunSpec("tinycnn", "demo", lr=0.05, seed=3, image_size=32, device="cpu", weights="/w.pt")
    params = spec.to_params(CPU)
    assert set(params) == set(OPTIONS) | {"resolved_device", "resolved_precision"}
    assert json.loads(json.dumps(params)) == params  # what the store writes reads back equal
    assert RunSpec.from_params(params, "tinycnn") == spec


def test_every_run_of_the_example_registry_reads_back_unchanged():
    rows = example_rows()
    assert rows
    for model, params in rows:
        spec = RunSpec.from_params(params, model)
        again = spec.to_params(Resolved("cpu", "fp32", params["image_size"]))
        legacy = {"device", "precision"}  # recorded resolved (before resolved_* had keys): never replayed
        assert {k: again[k] for k in params if k not in legacy} == {k: v for k, v in params.items() if k not in legacy}
        assert (spec.device, spec.precision) == (default("device"), default("precision"))


def test_replay_leaves_out_the_image_size_of_another_architecture():
    params = RunSpec("tinycnn", "d", image_size=20).to_params(Resolved("cpu", "fp32", 20))
    assert replay_values(params, same_model=True)["image_size"] == 20
    assert "image_size" not in replay_values(params, same_model=False)
    specs = build_specs(models=["tinycnn", "resnet18"], axes={}, base=replay_values(params, same_model=True),
                        source_model="tinycnn")
    assert [s.image_size for s in specs] == [20, None]


@pytest.mark.parametrize("option, texts, message", [
    ("lr", ["0.1,abc"], "--lr 'abc': not a number"),
    ("lr", ["0"], "--lr 0.0: must be greater than 0"),
    ("epochs", ["0"], "--epochs 0: must be at least 1"),
    ("batch_size", ["2.5"], "--batch-size '2.5': not a whole number"),
    ("precision", ["fp8"], "--precision 'fp8' is not one of auto, fp32, bf16, fp16"),
    ("lr", ["0.1,"], "--lr: an empty value"),
])
def test_bad_option_values_are_one_line(option, texts, message):
    with pytest.raises(ZooError) as err:
        parse_list(option, texts)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_comma_lists_and_repeats_make_a_product_models_first():
    axes = {"lr": parse_list("lr", ["0.1,0.01"]), "seed": parse_list("seed", ["1", "2,3"])}
    specs = build_specs(models=["tinycnn", "alexnet"], axes=axes, base={"data": "demo"})
    assert len(specs) == 2 * 2 * 3
    assert [(s.model, s.lr, s.seed) for s in specs[:4]] == [("tinycnn", 0.1, 1), ("tinycnn", 0.1, 2),
                                                            ("tinycnn", 0.1, 3), ("tinycnn", 0.01, 1)]
    assert varied(specs) == ["model", "lr", "seed"]


def test_grid_file_product_and_explicit_runs(tmp_path):
    product = tmp_path / "grid.toml"
    product.write_text('[base]\ndata = "demo"\nepochs = 2\n[grid]\nmodel = ["tinycnn"]\nlr = [0.1, 0.01]\n'
                       'batch-size = [8, 16]\n')
    runs = parse_grid(product)
    assert len(runs) == 4 and {r["batch_size"] for r in runs} == {8, 16} and all(r["epochs"] == 2 for r in runs)
    listed = tmp_path / "runs.toml"
    listed.write_text('[base]\ndata = "demo"\n[[runs]]\nmodel = "tinycnn"\nlr = 0.1\n[[runs]]\nmodel = "alexnet"\n'
                      'seed = 7\n')
    specs = build_specs(models=[], axes={}, rows=parse_grid(listed))
    assert [(s.model, s.lr, s.seed) for s in specs] == [("tinycnn", 0.1, 42), ("alexnet", None, 7)]  # None: the recipe's
    # the command line multiplies a grid file's runs
    assert len(build_specs(models=[], axes={"seed": [1, 2]}, rows=parse_grid(listed))) == 4


@pytest.mark.parametrize("text, message", [
    ('[grid]\nlearning_rate = [0.1]\n', "unknown key 'learning_rate'; use one of model, data, epochs"),
    ('[grid]\nlr = []\n', "'lr' is an empty list"),
    ('[grid]\nlr = [0.1, "x"]\n', "--lr 'x': not a number"),
    ('[base]\nlr = [0.1]\n', "'lr' takes one value here"),
    ('[params]\nlr = 0.1\n', "unknown table 'params'"),
    ('[grid\n', "is not valid TOML"),
    ('[[runs]]\nmodel = "tinycnn"\n[grid]\nlr = [0.1]\n', "not both"),
])
def test_bad_grid_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ZooError) as err:
        parse_grid(path)
    assert message in str(err.value)


def test_a_spec_refuses_zoo_tags_and_needs_a_model_and_data():
    from zoo.spec import check_tags

    with pytest.raises(ZooError, match="zoo's own"):
        check_tags([("zoo.group", "x")])
    with pytest.raises(ZooError, match="--data is required"):
        build_specs(models=["tinycnn"], axes={})
    with pytest.raises(ZooError, match="at least one model"):
        build_specs(models=[], axes={"data": ["demo"]})
