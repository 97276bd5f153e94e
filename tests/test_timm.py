"""The timm plugin (issue 20): every timm architecture as timm/NAME, with its own preprocessing, downstream too.

The runs are tiny (32 px, one epoch, a few images) with the smallest timm models; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import write_images
from zoo.preprocess import IMAGENET, Preprocess

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="the timm extra is not installed")

# test_convnext declares mean/std 0.5 (not ImageNet's), bicubic and a 0.95 crop
OWN_NORM = "timm/test_convnext"


@pytest.fixture(scope="module")
def grid(tmp_path_factory, cache_dir):
    """One grid mixing timm and torchvision models on one split: timm/test_convnext, timm/resnet10t, resnet18."""
    from typer.testing import CliRunner

    from zoo.cli import app

    root = tmp_path_factory.mktemp("timm")
    data = write_images(root / "data", {"cat": 8, "dog": 8}, size=32, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.setenv("ZOO_REGISTRY", str(root / "registry.db"))
        mp.setenv("ZOO_CACHE", str(cache_dir))
        import zoo.plugins
        from zoo.cli.app import state

        zoo.plugins.reset()
        state.registry = None
        result = CliRunner().invoke(app, ["train", OWN_NORM, "timm/resnet10t", "resnet18", "--data", str(data),
                                          "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--quiet"],
                                    catch_exceptions=False)
        state.registry = None
    assert result.exit_code == 0, result.output
    return root / "registry.db", data


def params_of(cli, run: int) -> dict:
    return json.loads(cli("show", str(run), "--format", "json").stdout)["params"]


# --- listing ------------------------------------------------------------------------------------------------------

def test_every_timm_architecture_is_listed_with_its_configuration(cli):
    rows = json.loads(cli("models", "--source", "timm", "--format", "json").stdout)
    assert len(rows) >= 1000 and all(r["name"].startswith("timm/") and r["source"] == "timm" for r in rows)
    detail = json.loads(cli("models", OWN_NORM, "--format", "json").stdout)[0]
    assert (detail["mean"], detail["std"], detail["interpolation"], detail["crop_fraction"]) == (
        [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "bicubic", 0.95)
    assert detail["default_size"] == 160 and detail["family"] == "convnext" and detail["tags"]


def test_a_fixed_size_model_takes_only_its_own_size(cli):
    detail = json.loads(cli("models", "timm/test_vit", "--format", "json").stdout)[0]
    assert detail["min_size"] == detail["default_size"] == 160


def test_preprocess_mapping_keeps_imagenet_where_timm_declares_nothing_usable():
    from zoo_builtin_plugins.timm_models import preprocess_of, sizes_of

    assert preprocess_of({}) == IMAGENET
    own = preprocess_of({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic",
                         "crop_pct": 0.95})
    assert own == Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 0.95)
    odd = preprocess_of({"mean": [0.5], "std": [0.5], "interpolation": "lanczos", "crop_pct": 1.5})
    assert odd == IMAGENET  # one-channel statistics, an interpolation zoo has not, a crop above 1: the defaults
    assert sizes_of({"input_size": [3, 176, 176]}) == (32, 176)
    assert sizes_of({"input_size": [3, 224, 224], "fixed_input_size": True}) == (224, 224)


def test_filter_source_max_params_and_sort(cli):
    rows = json.loads(cli("models", "--source", "torchvision", "--max-params", "3M", "--sort", "params",
                          "-f", "json").stdout)
    sizes = [r["params"] for r in rows]
    assert rows and all(r["source"] == "torchvision" for r in rows)
    assert sizes == sorted(sizes) and max(sizes) <= 3_000_000 and "squeezenet1_1" in [r["name"] for r in rows]
    substring = [r["name"] for r in json.loads(cli("models", "resnet10", "-f", "json").stdout)]
    assert "timm/resnet10t" in substring and "resnet101" in substring  # no wildcard: anywhere in the name
    globbed = [r["name"] for r in json.loads(cli("models", "timm/convnext_*", "-f", "json").stdout)]
    assert globbed and all(n.startswith("timm/convnext_") for n in globbed)
    both = [r["name"] for r in json.loads(cli("models", "timm/resnet1*", "--sort", "name", "-f", "json").stdout)]
    assert both.index("timm/resnet10t") < both.index("timm/resnet101")  # natural order


def test_filter_errors_are_one_line(cli):
    for args, words in ((["--source", "keras"], "Unknown --source 'keras': choose one of"),
                        (["--max-params", "5X"], "--max-params '5X' is not a count"),
                        (["--sort", "size"], "Unknown --sort 'size'"),
                        (["vit_*", "--max-params", "1K"], "None of the")):
        result = cli("models", *args)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert words in result.output


def test_count_fills_unknown_sizes_once(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    assert json.loads(cli("models", "timm/resnet10t", "-f", "json").stdout)[0]["params"] == 5_435_488
    cached = json.loads(next((tmp_path / "cache" / "timm").glob("params-*.json")).read_text())
    assert cached == {"resnet10t": 5_435_488}  # counted on the meta device once, then read from the cache
    import zoo.plugins

    zoo.plugins.reset()  # the next command, as a new process would load the plugins
    rows = json.loads(cli("models", "timm/resnet1*", "--max-params", "6M", "-f", "json").stdout)
    assert [r["name"] for r in rows] == ["timm/resnet10t"]


def test_table_fits_80_columns(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = cli("models", "timm/vit_base_patch16_*").stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "source" in out and "params" in out


# --- pretrained ---------------------------------------------------------------------------------------------------

def test_pretrained_offline_is_one_line_saying_where_to_put_the_weights(cli, monkeypatch, tmp_path, make_images):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    data = make_images({"cat": 6, "dog": 6}, size=24)
    result = cli("train", "timm/resnet10t", "--pretrained", "--data", data, "--epochs", "1", "--image-size", "32")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not in the local Hugging Face cache" in lines[0], result.output
    assert "timm/resnet10t.c3_in1k" in lines[0] and str(tmp_path / "hub") in lines[0]
    assert not Path(os.environ["ZOO_REGISTRY"]).exists()  # refused before any work: no registry, no run


def test_pretrained_loads_from_the_local_cache_with_a_fresh_classifier(monkeypatch, tmp_path):
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from zoo.plugins import build_plugins

    hub = tmp_path / "hub"
    snapshot = hub / "models--timm--resnet10t.c3_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (hub / "models--timm--resnet10t.c3_in1k" / "refs").mkdir()
    (hub / "models--timm--resnet10t.c3_in1k" / "refs" / "main").write_text("0123abc")
    torch.manual_seed(7)
    source = timm.create_model("resnet10t")
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    model = build_plugins(autoload=False).models().get("timm/resnet10t").build(3, pretrained=True)
    assert model.get_classifier().out_features == 3
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)


def test_weights_file_fits_a_timm_model_with_other_classes(cli, make_images, tmp_path):
    import timm
    import torch

    torch.save(timm.create_model("resnet10t", num_classes=5).state_dict(), tmp_path / "r10.pt")
    data = make_images({"cat": 6, "dog": 6}, size=24)
    result = cli("train", "timm/resnet10t", "--weights", tmp_path / "r10.pt", "--data", data, "--epochs", "1",
                 "--image-size", "32", "--quiet")
    assert result.exit_code == 0, result.output
    assert "fc.weight" in result.output  # the 5-class classifier is skipped, the run's own 2-class one kept


# --- downstream ---------------------------------------------------------------------------------------------------

def test_grid_records_each_models_own_normalisation(cli, grid, monkeypatch):
    registry, _ = grid
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    runs = {r["model"]: r["id"] for r in json.loads(cli("list-runs", "--format", "json").stdout)}
    assert set(runs) == {OWN_NORM, "timm/resnet10t", "resnet18"}
    own = params_of(cli, runs[OWN_NORM])
    assert (own["mean"], own["std"], own["interpolation"], own["crop_fraction"]) == (
        [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "bicubic", 0.95)
    tv = params_of(cli, runs["resnet18"])
    assert (tv["mean"], tv["interpolation"], tv["crop_fraction"]) == (list(IMAGENET.mean), "bilinear", 0.875)
    ranked = cli("compare", *[str(i) for i in runs.values()], "--format", "json")
    assert ranked.exit_code == 0, ranked.output
    import torch

    ckpt = torch.load(json.loads(cli("show", str(runs[OWN_NORM]), "--format", "json").stdout)["checkpoint"],
                      weights_only=True)
    assert Preprocess.from_record(ckpt) == Preprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.95)


BLOCKED = textwrap.dedent("""
    import json, sys
    sys.modules["timm"] = None  # `import timm` raises ImportError in this interpreter
    try:
        import timm
        raise SystemExit("timm importable")
    except ImportError:
        pass
    import numpy, torch, onnxruntime
    x = torch.rand(2, 3, 32, 32)
    pt2 = torch.export.load(sys.argv[1]).module()(x)
    onnx = onnxruntime.InferenceSession(sys.argv[2]).run(None, {"image": x.numpy()})[0]
    assert not [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in ("zoo", "timm")]
    print(json.dumps({"pt2": pt2.tolist(), "onnx": onnx.tolist()}))
""")


def test_exported_timm_run_loads_without_timm(cli, grid, monkeypatch, tmp_path):
    registry, data = grid
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    run = next(r["id"] for r in json.loads(cli("list-runs", "--format", "json").stdout) if r["model"] == OWN_NORM)
    for name in ("m.pt2", "m.onnx"):
        result = cli("export", str(run), "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "m.json").read_text())["preprocessing"]
    assert (sidecar["interpolation"], sidecar["crop_fraction"], sidecar["mean"]) == ("bicubic", 0.95, [0.5] * 3)
    done = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "m.pt2"), str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    import numpy

    assert numpy.array(out["pt2"]).shape == (2, 2)
    assert numpy.allclose(out["pt2"], out["onnx"], atol=1e-4)
    predicted = cli("predict", str(run), str(Path(data) / "cat"), "--format", "json")
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)) == 8
    evaluated = cli("evaluate", str(run), "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output


def test_without_timm_the_plugin_registers_nothing(monkeypatch, tmp_path):
    import zoo_builtin_plugins.timm_models as plugin
    from zoo.plugins import build_plugins

    monkeypatch.setattr(plugin, "timm_version", lambda: None)  # what importlib.metadata says without the extra
    monkeypatch.setattr(plugin, "subprocess", None)  # and nothing is run to find out
    models = build_plugins(autoload=False).models()
    assert "resnet18" in models and not [n for n in models.names() if n.startswith("timm/")]
