"""Using trained runs through the real CLI: evaluate, predict, export (issue 5)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from typer.testing import CliRunner

from conftest import write_images

CLASSES = {"cat": 12, "dog": 12}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """One tinycnn run trained once for the module: (registry path, data dir, run id)."""
    root = tmp_path_factory.mktemp("use")
    data = write_images(root / "data", CLASSES, size=24, seed=1)
    registry = root / "registry.db"
    from zoo.cli import app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.setenv("ZOO_CACHE", str(cache_dir))
        mp.delenv("ZOO_ARTIFACTS", raising=False)
        result = CliRunner().invoke(app, ["--registry", str(registry), "train", "tinycnn", "--data", str(data),
                                          "--epochs", "2", "--image-size", "24", "--batch-size", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    return registry, data, 1


def test_evaluate_own_split_records_a_new_evaluation(cli, trained):
    registry, _, run = trained
    from zoo.store import Registry

    with Registry.open(str(registry)) as reg:
        before = reg.get_run(run)
    result = cli("--registry", registry, "evaluate", run, "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    # the own test split gives exactly the metrics recorded at training time
    assert out["metrics"]["test_accuracy"] == pytest.approx(before.metrics["test_accuracy"])
    assert out["confusion"] == before.confusion
    assert sum(map(sum, out["confusion"])) == before.test_size
    with Registry.open(str(registry)) as reg:
        after = reg.get_run(run)
    assert after.metrics == before.metrics  # the original test metrics are never overwritten
    assert len(after.evaluations) == len(before.evaluations) + 1
    assert after.evaluations[-1].dataset_fingerprint == before.dataset_fingerprint
    assert after.evaluations[-1].dataset.endswith("(test split)")  # told apart from the whole folder
    assert out["metrics"]["images"] == before.test_size


def test_evaluate_on_another_folder_with_matching_classes(cli, trained, make_images):
    registry, _, run = trained
    other = make_images({"cat": 5, "dog": 4}, size=24, seed=7)
    result = cli("--registry", registry, "evaluate", run, "--data", other, "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert sum(map(sum, out["confusion"])) == 9  # every image of the other folder, not a split of it
    assert [sum(row) for row in out["confusion"]] == [5, 4]
    assert out["dataset"] == f"{other.resolve()} (all images)"
    assert out["metrics"]["images"] == 9
    shown = cli("--registry", registry, "show", run)
    assert str(other.resolve()) in shown.output or other.name in shown.output


def test_evaluate_class_mismatch_is_one_clear_line(cli, trained, make_images):
    registry, _, run = trained
    other = make_images({"cat": 3, "bird": 3}, size=24)
    before = registry.read_bytes()
    result = cli("--registry", registry, "evaluate", run, "--data", other)
    assert result.exit_code == 1
    assert "do not match" in result.output and "bird" in result.output
    assert "Traceback" not in result.output
    assert registry.read_bytes() == before


def test_predict_reports_a_corrupt_file_and_predicts_the_rest(cli, trained, tmp_path):
    registry, data, run = trained
    folder = tmp_path / "new"
    folder.mkdir()
    for src in sorted((data / "cat").iterdir())[:2] + sorted((data / "dog").iterdir())[:1]:
        shutil.copy(src, folder / src.name)
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    result = cli("--registry", registry, "predict", run, folder, "--format", "json", "-k", "2")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):result.output.rindex("]") + 1])
    assert len(rows) == 4
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    assert "error" in by_name["broken.jpg"]
    good = [r for name, r in by_name.items() if name != "broken.jpg"]
    for r in good:
        assert [p["class"] for p in r["predictions"]] and len(r["predictions"]) == 2
        assert sum(p["probability"] for p in r["predictions"]) == pytest.approx(1.0, abs=1e-4)
        assert r["predictions"][0]["probability"] >= r["predictions"][1]["probability"]
    table = cli("--registry", registry, "predict", run, folder)
    assert "broken.jpg" in table.output and "unreadable" in table.output


def test_predict_missing_path_is_an_error(cli, trained, tmp_path):
    registry, _, run = trained
    result = cli("--registry", registry, "predict", run, tmp_path / "nope.jpg")
    assert result.exit_code == 1 and "does not exist" in result.output


def _checkpoint_outputs(registry, run, x):
    import torch

    from zoo.checkpoint import build_from_checkpoint
    from zoo.data import IMAGENET_MEAN, IMAGENET_STD
    from zoo.store import Registry

    with Registry.open(str(registry)) as reg:
        path = reg.get_run(run).checkpoint
    model, _ = build_from_checkpoint(path)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std)


def test_torchscript_export_round_trip(cli, trained, tmp_path):
    import torch

    registry, _, run = trained
    out = tmp_path / "model.pt"
    result = cli("--registry", registry, "export", run, "--format", "torchscript", "--output", out)
    assert result.exit_code == 0, result.output
    extra = {"zoo.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["zoo.json"])
    assert meta["classes"] == ["cat", "dog"] and meta["image_size"] == 24
    x = torch.rand(3, 3, 24, 24)
    with torch.no_grad():
        got = loaded(x)
    assert torch.allclose(got, _checkpoint_outputs(registry, run, x), atol=1e-5)


def test_onnx_export_runs_or_names_the_extra(cli, trained, tmp_path, monkeypatch):
    registry, _, run = trained
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    result = cli("--registry", registry, "export", run, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "zoo-vision[onnx]" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_export_writes_a_valid_model(cli, trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    registry, _, run = trained
    out = tmp_path / "m.onnx"
    result = cli("--registry", registry, "export", run, "--format", "onnx", "--output", out)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"]


def test_unknown_export_format_and_missing_checkpoint(cli, trained, tmp_path):
    registry, data, run = trained
    result = cli("--registry", registry, "export", run, "--format", "tflite", "--output", tmp_path / "x")
    assert result.exit_code == 1 and "torchscript" in result.output
    from zoo.store import Registry

    copy = tmp_path / "copy.db"
    shutil.copy(registry, copy)
    with Registry.open(str(copy)) as reg:
        reg.update_run(run, checkpoint=str(tmp_path / "gone.pt"))
    result = cli("--registry", copy, "predict", run, data / "cat")
    assert result.exit_code == 1 and "checkpoint" in result.output and "missing" in result.output


def test_predict_names_with_brackets_and_all_unreadable(cli, trained, tmp_path):
    registry, data, run = trained
    folder = tmp_path / "odd[b]name"
    folder.mkdir()
    shutil.copy(sorted((data / "dog").iterdir())[0], folder / "[red]dog.jpg")
    result = cli("--registry", registry, "predict", run, folder)
    assert result.exit_code == 0, result.output
    assert "[red]dog.jpg" in result.output  # user text shown as typed, not read as markup
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"nope")
    (bad / "b.png").write_bytes(b"nope")
    result = cli("--registry", registry, "predict", run, bad)
    assert result.exit_code == 1
    assert "Error: None of the 2 file(s) could be read" in result.output


def test_export_to_a_folder_or_unwritable_place_is_one_line(cli, trained, tmp_path):
    registry, _, run = trained
    result = cli("--registry", registry, "export", run, "-f", "torchscript", "-o", tmp_path)
    assert result.exit_code == 1 and "is a folder" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("--registry", registry, "export", run, "-o", blocker / "sub" / "m.pt")
    assert result.exit_code == 1 and result.output.startswith("Error: Cannot create the folder")
    assert "Traceback" not in result.output
