"""zoo export (issue 12, item 1): files that load without zoo, describe themselves, and predict as zoo predict.

Every exported file is loaded in a separate Python process that never imports zoo, by running the three lines
the command prints; what they print is compared with `zoo predict --format json` on the same images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_images

CLASSES = {"cat": 10, "dog": 10}
NO_ZOO = "import sys; assert not [m for m in sys.modules if m == 'zoo' or m.startswith('zoo.')], 'zoo imported'"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """A registry with one finished tinycnn run and its checkpoint (weights from a fixed seed, no training), and
    test images that need the resize and the EXIF rotation."""
    import torch
    from PIL import Image

    from zoo.checkpoint import save_checkpoint
    from zoo.data import IMAGENET_MEAN, IMAGENET_STD
    from zoo.plugins import get_plugins
    from zoo.store import Registry

    root = tmp_path_factory.mktemp("export")
    data = write_images(root / "data", CLASSES, size=24, seed=3)
    registry = root / "registry.db"
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
        model = get_plugins().models().get("tinycnn").build(2, pretrained=False)
    with Registry.open(str(registry)) as reg:
        run = reg.start_run(model="tinycnn", plugin="tinycnn", params={"image_size": 24},
                            dataset={"path": str(data), "classes": sorted(CLASSES)})
        ckpt = save_checkpoint(reg.run_artifacts_dir(run) / "best.pt", model="tinycnn", plugin="tinycnn",
                               classes=sorted(CLASSES), image_size=24, state_dict=model.state_dict(), epoch=1,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
        reg.finish_run(run, "completed", best_epoch=1, epochs_run=1, checkpoint=str(ckpt))
    images = root / "photos"
    images.mkdir()
    wide = Image.open(sorted((data / "cat").iterdir())[0]).convert("RGB").resize((61, 37))
    wide.save(images / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": zoo predict applies it, so must the example
    tall = Image.open(sorted((data / "dog").iterdir())[1]).convert("RGB").resize((29, 45))
    tall.save(images / "rotated.jpg", exif=exif, quality=95)
    return registry, [images / "wide.png", images / "rotated.jpg"]


def predicted(cli, registry, image: Path) -> dict[str, float]:
    result = cli("--registry", registry, "predict", 1, image, "--format", "json", "--top-k", "10")
    assert result.exit_code == 0, result.output
    return {p["class"]: p["probability"] for p in json.loads(result.stdout)[0]["predictions"]}


def example_of(output: str) -> list[str]:
    """The three lines of Python the command printed last."""
    lines = output.rstrip("\n").splitlines()
    assert lines[-4] == "", output
    return lines[-3:]


def run_example(lines: list[str], image: Path, cwd: Path) -> dict[str, float]:
    code = "\n".join(lines + [NO_ZOO]).replace('"photo.jpg"', json.dumps(str(image)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    import ast

    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def assert_same_as_predict(cli, registry, lines, images, cwd):
    for image in images:
        got = run_example(lines, image, cwd)
        want = predicted(cli, registry, image)
        assert set(got) == set(want) == set(CLASSES)
        for name in want:
            assert got[name] == pytest.approx(want[name], abs=2e-6), (image.name, got, want)


def test_pt2_is_the_default_and_its_printed_example_predicts_as_zoo_predict(cli, trained, tmp_path, monkeypatch):
    registry, images = trained
    monkeypatch.chdir(tmp_path)
    result = cli("--registry", registry, "export", 1, "-o", "tinycnn")
    assert result.exit_code == 0, result.output
    out = tmp_path / "tinycnn.pt2"  # pt2 by default, its suffix added
    assert out.is_file() and (tmp_path / "tinycnn.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinycnn.json", "tinycnn.pt2"]
    lines = example_of(result.stdout)
    assert "torch.export.load" in lines[0] and len(lines) == 3
    assert_same_as_predict(cli, registry, lines, images, tmp_path)


def test_pt2_carries_classes_and_preprocessing(cli, trained, tmp_path):
    registry, _ = trained
    out = tmp_path / "m.pt2"
    assert cli("--registry", registry, "export", 1, "--format", "pt2", "-o", out).exit_code == 0
    code = ("import json, torch; extra = {'zoo.json': ''}; torch.export.load(%r, extra_files=extra); "
            "print(extra['zoo.json'])" % str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)
    assert meta["classes"] == ["cat", "dog"] and meta["image_size"] == 24
    pre = meta["preprocessing"]
    assert pre["resize_shorter_side"] == 27 and pre["center_crop"] == 24 and pre["input_range"] == [0.0, 1.0]
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["classes"] == meta["classes"] and side["preprocessing"] == pre
    assert side["files"] == {"pt2": "m.pt2"} and len(side["examples"]["pt2"]) == 3


def test_onnx_is_one_self_contained_file_with_metadata(cli, trained, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    registry, images = trained
    folder = tmp_path / "out"
    folder.mkdir()
    result = cli("--registry", registry, "export", 1, "-o", folder / "m.onnx")  # the suffix picks the format
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["m.json", "m.onnx"]  # no hidden or .data file
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(folder / "m.onnx", alone / "m.onnx")  # the .onnx alone is the whole model
    lines = [line.replace(json.dumps(str(folder / "m.onnx")), json.dumps("m.onnx")) for line in example_of(result.stdout)]
    assert "onnxruntime.InferenceSession" in lines[0]
    assert_same_as_predict(cli, registry, lines, images, alone)
    meta = ort.InferenceSession(str(alone / "m.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["cat", "dog"]
    assert json.loads(meta["preprocessing"])["resize_shorter_side"] == 27
    import onnx

    onnx.checker.check_model(str(alone / "m.onnx"), full_check=True)


def test_onnx_beyond_the_protobuf_limit_names_its_visible_data_file(cli, trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import zoo.inference

    monkeypatch.setattr(zoo.inference, "ONNX_INLINE_LIMIT", 0)  # as if the weights were over 2 GB
    registry, images = trained
    folder = tmp_path / "big"
    folder.mkdir()
    result = cli("--registry", registry, "export", 1, "-f", "onnx", "-o", folder / "m.onnx")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["m.json", "m.onnx", "m.onnx.data"]
    assert "m.onnx.data" in result.stdout
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)  # the file names its data file relative to itself
    shutil.rmtree(folder)
    lines = [line.replace(json.dumps(str(folder / "m.onnx")), json.dumps("m.onnx")) for line in example_of(result.stdout)]
    assert_same_as_predict(cli, registry, lines, images[:1], moved)


def test_torchscript_is_still_available_and_its_example_predicts_as_zoo_predict(cli, trained, tmp_path):
    registry, images = trained
    out = tmp_path / "m.pt"
    result = cli("--registry", registry, "export", 1, "--format", "torchscript", "-o", out)
    assert result.exit_code == 0, result.output
    lines = example_of(result.stdout)
    assert "torch.jit.load" in lines[0]
    assert_same_as_predict(cli, registry, lines, images[:1], tmp_path)


def test_never_overwrites_without_force(cli, trained, tmp_path):
    registry, _ = trained
    out = tmp_path / "m.pt2"
    out.write_bytes(b"precious")
    result = cli("--registry", registry, "export", 1, "-o", out)
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    assert out.read_bytes() == b"precious" and not (tmp_path / "m.json").exists()
    result = cli("--registry", registry, "export", 1, "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"precious"
    # a description that is someone else's is not replaced either
    other = tmp_path / "other.pt2"
    (tmp_path / "other.json").write_text('{"mine": true}')
    result = cli("--registry", registry, "export", 1, "-o", other)
    assert result.exit_code == 1 and "other.json" in result.output and not other.exists()
    # the same run in another format adds itself to its own description
    pytest.importorskip("onnxscript")
    assert cli("--registry", registry, "export", 1, "-o", tmp_path / "m.onnx").exit_code == 0
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["files"] == {"pt2": "m.pt2", "onnx": "m.onnx"}


def test_output_folder_is_created_only_as_given(cli, trained, tmp_path):
    registry, _ = trained
    result = cli("--registry", registry, "export", 1, "-o", tmp_path / "a" / "b" / "m.pt2")
    assert result.exit_code == 1
    assert result.output.startswith("Error: Cannot create the folder") and len(result.output.splitlines()) == 1
    assert not (tmp_path / "a").exists()
    result = cli("--registry", registry, "export", 1, "-o", tmp_path / "new" / "m")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["m.json", "m.pt2"]  # suffix added
    result = cli("--registry", registry, "export", 1, "-o", tmp_path / "m.json")
    assert result.exit_code == 1 and ".json" in result.output


def test_bad_export_input_is_one_line(trained, tmp_path):
    registry, _ = trained
    env = dict(os.environ, COLUMNS="200")
    for args in (["export", "1", "-f", "tflite"], ["export", "9"], ["export", "1", "-o", str(tmp_path)],
                 ["export", "1", "-o", "/dev/null"]):  # a device: refused, never /dev/null.pt2
        done = subprocess.run([sys.executable, "-m", "zoo", "--registry", str(registry), *args], capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr


def test_predict_takes_a_device(cli, trained):
    registry, images = trained
    on_cpu = cli("--registry", registry, "predict", 1, images[0], "--device", "cpu", "-f", "json")
    assert on_cpu.exit_code == 0, on_cpu.output
    assert json.loads(on_cpu.stdout) == json.loads(cli("--registry", registry, "predict", 1, images[0],
                                                       "-f", "json").stdout)
    result = cli("--registry", registry, "predict", 1, images[0], "--device", "tpu9")
    assert result.exit_code == 1 and "--device" in result.output and len(result.output.splitlines()) == 1
    import torch

    if not torch.cuda.is_available():
        result = cli("--registry", registry, "predict", 1, images[0], "--device", "cuda")
        assert result.exit_code == 1 and "no CUDA GPU" in result.output


def test_large_photos_agree_with_zoo_predict_closely(cli, trained, tmp_path):
    """zoo predict decodes a photo four or more times the size it needs at reduced scale (JPEG draft, then
    Image.reduce: bounded memory); the plain pipeline of the printed example then differs in the last digits."""
    from PIL import Image

    registry, images = trained
    big = tmp_path / "big.jpg"
    Image.open(images[0]).convert("RGB").resize((640, 480), Image.BICUBIC).save(big, quality=92)
    result = cli("--registry", registry, "export", 1, "-o", tmp_path / "m.pt2")
    got = run_example(example_of(result.stdout), big, tmp_path)
    want = predicted(cli, registry, big)
    assert max(got, key=got.get) == max(want, key=want.get)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-3)


# ----------------------------------------------------------------------------- evaluate on some of the classes
@pytest.fixture
def three_classes(tmp_path):
    """A registry with one tinycnn run over cat, dog and fox (fixed-seed weights, no training)."""
    import torch

    from zoo.checkpoint import save_checkpoint
    from zoo.data import IMAGENET_MEAN, IMAGENET_STD
    from zoo.plugins import get_plugins
    from zoo.store import Registry

    torch.manual_seed(1)
    model = get_plugins().models().get("tinycnn").build(3, pretrained=False)
    registry = tmp_path / "three.db"
    with Registry.open(str(registry)) as reg:
        run = reg.start_run(model="tinycnn", plugin="tinycnn", params={"image_size": 24})
        ckpt = save_checkpoint(reg.run_artifacts_dir(run) / "best.pt", model="tinycnn", plugin="tinycnn",
                               classes=["cat", "dog", "fox"], image_size=24, state_dict=model.state_dict(), epoch=1,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
        reg.finish_run(run, "completed", best_epoch=1, epochs_run=1, checkpoint=str(ckpt))
    return registry


def test_evaluate_on_some_of_the_classes(cli, three_classes, make_images):
    folder = make_images({"cat": 4, "fox": 3}, size=24)
    result = cli("--registry", three_classes, "evaluate", 1, "--data", folder, "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["classes"] == ["cat", "dog", "fox"] and [sum(row) for row in out["confusion"]] == [4, 0, 3]
    assert "2 of run 1's 3 classes (no dog)" in result.stderr
    metrics = out["metrics"]
    assert "test_f1/dog" not in metrics and "test_f1/cat" in metrics
    assert metrics["test_f1"] == pytest.approx((metrics["test_f1/cat"] + metrics["test_f1/fox"]) / 2)
    assert metrics["images"] == 7
    table = cli("--registry", three_classes, "evaluate", 1, "--data", folder).stdout
    assert f"Per class ({folder.resolve()} (all images), 7 images)" in table  # which images it used
    other = make_images({"cat": 3, "wolf": 3}, size=24)
    result = cli("--registry", three_classes, "evaluate", 1, "--data", other)
    assert result.exit_code == 1 and "do not match" in result.output
