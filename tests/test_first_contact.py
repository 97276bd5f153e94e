"""What a new user meets first (issue 23): the README's commands as written, and the small frictions around them.

One test (or a few) per point of the issue, through the real CLI; the ui's table width is in test_web_browser.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_cli_runs import add_run
from zoo.store import Registry

ROOT = Path(__file__).resolve().parents[1]
BASE = {"lr": 0.01, "batch_size": 8, "seed": 42, "data": "/data/pets"}


def registry_path() -> Path:
    import os

    return Path(os.environ["ZOO_REGISTRY"])


# ------------------------------------------------------------------------------- 6: run names where ids go


def test_a_unique_run_name_works_wherever_a_run_id_does(cli):
    with Registry.open(str(registry_path())) as reg:
        first = add_run(reg, "tinycnn", params=BASE, acc=0.9, loss=0.3)
        second = add_run(reg, "resnet18", params=BASE, acc=0.8, loss=0.4)
        twins = [add_run(reg, "tinycnn", params=BASE, acc=0.7, loss=0.5, name="twin") for _ in range(2)]
    assert cli("rename", first, "sgd-base").exit_code == 0
    shown = cli("show", "sgd-base", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == first
    assert cli("tag", "sgd-base", "k=v").exit_code == 0
    diff = cli("diff", "sgd-base", second)
    assert diff.exit_code == 0 and "resnet18" in diff.stdout
    ambiguous = cli("show", "twin")
    assert ambiguous.exit_code == 1
    assert f"runs {twins[0]} (tinycnn), {twins[1]} (tinycnn) have it" in ambiguous.stderr
    unknown = cli("show", "nobody")
    assert unknown.exit_code == 1 and "No run is named 'nobody'" in unknown.stderr


# ------------------------------------------------------------------------------- 8: onnxruntime installed


def test_the_onnx_extra_installs_what_the_export_snippet_imports():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("[")[0].strip() for req in extras["onnx"]}
    assert {"onnx", "onnxscript", "onnxruntime"} <= names
    assert "onnxruntime" in {req.split(">")[0].strip() for req in extras["dev"]}


# ------------------------------------------------------------- 1, 2, 3, 9, 10, 11: zoo train and its --dry-run

SEED_MODELS = {"alexnet": "IMAGENET1K_V1", "resnet18": "IMAGENET1K_V1", "resnet34": "IMAGENET1K_V1",
               "resnet50": "IMAGENET1K_V2"}


def params_of(cli, run_id) -> dict:
    return json.loads(cli("show", run_id, "--format", "json").stdout)["params"]


def readme_reproduction_line() -> list[str]:
    import shlex

    line = next(line for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("zoo train alexnet resnet18 resnet34 resnet50"))
    return shlex.split(line.split("#")[0])[1:]


def stand_in_weights(torch_home: Path, models) -> dict[str, Path]:
    """Where torchvision's hub cache keeps each model's ImageNet file, filled with a state_dict of the right
    names and shapes whose every tensor is one number broadcast (stride 0): a few kB instead of 100 MB."""
    import torch
    import torchvision.models as tvm

    paths = {}
    for name in models:
        url = tvm.get_model_weights(name)[SEED_MODELS[name]].url
        with torch.device("meta"):
            shapes = tvm.get_model(name, weights=None).state_dict()
        state = {k: torch.full((), 1.0 if "running_var" in k else 0.01, dtype=v.dtype).expand(v.shape)
                 for k, v in shapes.items()}
        path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        paths[name] = path
    return paths


@pytest.fixture
def no_training(monkeypatch):
    """The engine's training loop replaced by a failure: the runs are planned, their models built (pretrained
    files loaded), their params recorded, and four big nets are not trained on a CPU."""
    import zoo.engine

    def refuse(*args, **kwargs):
        raise RuntimeError("stand-in: not trained in this test")

    monkeypatch.setattr(zoo.engine, "train", refuse)


@pytest.fixture
def offline(monkeypatch):
    """Any download fails at once, as without a network."""
    import urllib.error

    import torch.hub

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def test_the_readme_reproduction_line_records_the_seed_report_recipe(cli, tmp_path, monkeypatch, no_training,
                                                                     offline):
    from conftest import write_images

    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "data", {"cat": 10, "dog": 10}, size=16)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    stand_in_weights(tmp_path / "torch", SEED_MODELS)
    args = readme_reproduction_line()
    assert args == ["train", "alexnet", "resnet18", "resnet34", "resnet50", "--data", "./data", "--pretrained"]
    result = cli(*args)
    assert "stand-in: not trained" in result.stderr  # every run got as far as the training loop
    runs = json.loads(cli("list-runs", "--format", "json").stdout)
    assert sorted(r["model"] for r in runs) == sorted(SEED_MODELS)
    for run in runs:
        params = params_of(cli, run["id"])
        assert (params["batch_size"], params["lr"], params["momentum"], params["patience"], params["split"],
                params["seed"]) == (4, 0.001, 0.9, 7, "8:1:1", 42), run["model"]
        assert params["pretrained"] is True and params["recipe"] == "seed" and params["optimizer"] == "sgd"


def test_an_explicit_batch_size_wins_over_the_seed_recipe(cli, make_images):
    images = make_images({"a": 10, "b": 10}, size=16)
    shown = cli("train", "tinycnn", "--data", images, "--recipe", "seed", "--batch-size", "16", "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "batch_size 16," in shown.stdout and "batch_size 4," not in shown.stdout
    default = cli("train", "tinycnn", "--data", images, "--recipe", "seed", "--dry-run")
    assert "batch_size 4," in default.stdout


def test_every_missing_pretrained_file_is_listed_at_once_with_its_destination(cli, tmp_path, monkeypatch, offline,
                                                                              make_images):
    import torchvision.models as tvm

    images = make_images({"a": 10, "b": 10}, size=16)
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    stand_in_weights(home, ["resnet18"])  # one of the four is there
    destinations = {name: home / "hub" / "checkpoints" / tvm.get_model_weights(name)[w].url.rsplit("/", 1)[1]
                    for name, w in SEED_MODELS.items()}
    args = ("train", *SEED_MODELS, "--data", images, "--pretrained")
    dry = cli(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    text = " ".join(dry.stdout.split())
    for name in ("alexnet", "resnet34", "resnet50"):
        assert f"Weights {name}: {destinations[name]} missing" in text
    assert f"Weights resnet18: {destinations['resnet18']} found" in text
    assert "3 pretrained weights file(s) not in the cache" in dry.stderr
    real = cli(*args)
    assert real.exit_code == 1
    error = [line for line in real.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and error[0].startswith("Error: Cannot download 3 pretrained weights file(s)"), error
    for name in ("alexnet", "resnet34", "resnet50"):
        assert f"'{name}': copy {destinations[name].name} from https://" in error[0]
        assert f" to {destinations[name]}" in error[0]
    assert not registry_path().exists()  # refused before the registry opened


def test_weights_per_model(cli, tmp_path, monkeypatch, make_images, no_training):
    import torch

    from zoo.plugins import build_plugins

    images = make_images({"a": 10, "b": 10}, size=16)
    tiny = tmp_path / "tiny.pt"
    torch.save(build_plugins(autoload=False).models().get("tinycnn").build(2).state_dict(), tiny)
    resnet = stand_in_weights(tmp_path / "torch", ["resnet18"])["resnet18"]
    args = ("train", "tinycnn", "resnet18", "--data", images, "--image-size", "32",
            "--weights", f"tinycnn={tiny}", "--weights", f"resnet18={resnet}")
    dry = cli(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    text = "".join(dry.stdout.split())  # the table may fold long paths
    assert f"--weights{tiny}" in text and f"--weights{resnet}" in text
    cli(*args)
    runs = {r["model"]: params_of(cli, r["id"])["weights"]
            for r in json.loads(cli("list-runs", "--format", "json").stdout)}
    assert runs == {"tinycnn": str(tiny), "resnet18": str(resnet)}
    both = cli("train", "tinycnn", "resnet18", "--data", images, "--weights", tiny, "--weights", resnet)
    assert both.exit_code == 1 and "--weights MODEL=FILE" in both.stderr
    missing = cli("train", "tinycnn", "--data", images, "--weights", f"tinycnn={tmp_path / 'nope.pt'}", "--dry-run")
    assert missing.exit_code == 1 and "nope.pt' does not exist" in missing.stderr


@pytest.mark.parametrize("args", [("--data", "/nonexistent"), ("--data", "DATA", "--image-size", "8"),
                                  ("--data", "/nonexistent", "--queue"), ("--data", "DATA", "--split", "1:0:0")])
def test_a_refused_command_creates_nothing(cli, tmp_path, monkeypatch, make_images, args):
    images = make_images({"a": 10, "b": 10}, size=16)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("ZOO_REGISTRY")
    result = cli("train", "tinycnn", *[str(images) if a == "DATA" else a for a in args])
    assert result.exit_code == 1 and result.stderr.startswith("Error:"), result.output
    assert list(here.iterdir()) == []


def test_minimum_sizes_are_real(cli, make_images):
    rows = {r["name"]: r for r in json.loads(cli("models", "--format", "json").stdout)}
    assert all(rows[n]["min_size"] == 32 for n in ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0",
                                                      "regnet_x_400mf", "wide_resnet50_2", "densenet121"))
    assert rows["alexnet"]["min_size"] == 63 and rows["inception_v3"]["min_size"] == 75
    images = make_images({"a": 10, "b": 10}, size=16)
    for model, minimum in (("resnet18", 32), ("tinycnn", 16)):
        refused = cli("train", model, "--data", images, "--image-size", "1", "--dry-run")
        assert refused.exit_code == 1 and f"minimum of {minimum} px" in refused.stderr, refused.output


def test_the_dry_run_shows_the_resolved_plan_and_every_check(cli, make_images, tmp_path):
    images = make_images({"a": 10, "b": 10}, size=16)
    one = cli("train", "tinycnn", "--data", images, "--dry-run")
    assert one.exit_code == 0, one.output
    text = " ".join(one.stdout.split())
    assert "Plan: 1 run, group" in text and "1 runs" not in text
    assert "64 px" in text and "random weights" in text  # tinycnn's own size, no starting weights
    for value in ("recipe scratch", "optimizer nesterov", "lr 0.05", "batch_size 32", "epochs 60", "patience 15",
                  "split 8:1:1", "seed 42", "schedule cosine", "augment none"):
        assert value in text, value
    assert f"Data {images}: {images}, 20 images in 2 classes (a 10, b 10)" in text
    assert not registry_path().exists()
    grid = cli("train", "tinycnn", "--data", images, "--seed", "1,2", "--dry-run")
    assert "Plan: 2 runs" in grid.stdout
    thin = make_images({"a": 10, "b": 1}, size=16)
    problem = cli("train", "tinycnn", "--data", thin, "--dry-run")
    assert problem.exit_code == 1 and "The dry run found 1 problem(s)" in problem.stderr
    assert f"Data {thin}:" in " ".join(problem.stdout.split())


# ------------------------------------------------------------------------------- 5: a broken plugin is skipped


def test_a_broken_plugin_is_skipped_with_one_warning_and_marked_in_zoo_plugins(tmp_path, monkeypatch, make_images):
    import os
    import subprocess
    import textwrap

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "badkw.py").write_text(textwrap.dedent('''
        import zoo

        @zoo.hookimpl
        def register_models(register):
            register("goodkw", lambda *, num_classes, pretrained=False: None)
            register("badkw", lambda *, num_classes, pretrained=False: None, colour="red")
    '''))
    (folder / "noimport.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(folder))
    monkeypatch.delenv("ZOO_DISABLE_PLUGIN_AUTOLOAD")
    images = make_images({"a": 10, "b": 10}, size=16)

    def zoo(*args):
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                              env=dict(os.environ, COLUMNS="200"), timeout=120)

    for args in (("models", "tiny*"), ("train", "tinycnn", "--data", images, "--dry-run")):
        done = zoo(*args)
        assert done.returncode == 0 and "tinycnn" in done.stdout, done.stderr
        warnings = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(warnings) == 2, done.stderr  # one per broken plugin, each naming it
        assert any("'badkw'" in w and "unknown metadata: colour" in w for w in warnings)
        assert any("'noimport'" in w and "boom at import" in w for w in warnings)
    listed = {r["name"]: r for r in json.loads(zoo("plugins", "--format", "json").stdout)}
    assert "unknown metadata: colour" in listed["badkw"]["error"]
    assert "boom at import" in listed["noimport"]["error"]
    assert not listed["tinycnn"].get("error")
    assert "goodkw" not in zoo("models", "--format", "json").stdout  # skipped whole, not half


# ------------------------------------------------------------------------------- 7, 12: notes and exit codes


def test_notes_once_and_nothing_matched_exits_1(cli, monkeypatch):
    with Registry.open(str(registry_path())) as reg:
        for i in range(4):
            add_run(reg, "tinycnn", params={**BASE, "lr": 0.1 ** i}, acc=0.5 + i / 10, loss=0.3,
                    dataset_fp="fp-one" if i % 2 else "fp-two")
    listed = cli("list-runs", "-n", "3")
    assert listed.exit_code == 0
    assert "3 of 4" not in listed.stdout and listed.stderr.count("3 of 4 matching runs listed") == 1
    monkeypatch.setenv("COLUMNS", "60")  # narrow: the sparkline column goes, in both datasets' tables
    narrow = cli("compare")
    assert narrow.exit_code == 0 and narrow.stdout.count("Dataset ") == 2
    assert (narrow.stdout + narrow.stderr).count("hidden (") == 1
    monkeypatch.setenv("COLUMNS", "200")
    for args in (("compare", "--data", "pets-nowhere"), ("compare", "--model", "nomatch*"),
                 ("list-runs", "--model", "nomatch*"), ("models", "nomatch")):
        result = cli(*args)
        assert result.exit_code == 1 and result.stderr.startswith("Error: No "), (args, result.output)
    assert json.loads(cli("list-runs", "--model", "nomatch*", "--format", "json").stdout) == []


def test_lr_find_rule_is_described_once():
    import re
    import subprocess

    rule = "a tenth of the lr where the smoothed loss was lowest"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert rule in readme
    help_text = subprocess.run([sys.executable, "-m", "zoo", "lr-find", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    assert rule in " ".join(re.sub(r"[│╭╮╰╯─]", " ", help_text).split())
    from zoo.engine import suggest_lr

    points = [(10 ** (i / 10 - 6), 1.0 if i == 30 else 2.0) for i in range(40)]
    assert suggest_lr(points) == pytest.approx(points[30][0] / 10)  # the rule as the code applies it


def test_the_worker_points_at_zoo_show_for_a_failed_run(cli, make_images):
    import shutil

    images = make_images({"a": 10, "b": 10}, size=16)
    assert cli("train", "tinycnn", "--data", images, "--queue").exit_code == 0
    shutil.rmtree(images)  # the worker cannot find the data: the run fails before training
    worked = cli("worker")
    assert worked.exit_code == 1
    run_id = json.loads(cli("list-runs", "--format", "json").stdout)[0]["id"]
    assert f"`zoo show {run_id}` shows why" in worked.stderr
    shown = cli("show", run_id)
    assert "failed" in shown.stdout and "does not exist" in " ".join(shown.stdout.split())


# ------------------------------------------------------------------------------- 4: one diverged run in a plot


def test_plot_goes_log_when_one_curve_dwarfs_the_rest(cli, tmp_path):
    pytest.importorskip("matplotlib")
    with Registry.open(str(registry_path())) as reg:
        calm = add_run(reg, "tinycnn", params=BASE, acc=0.9, loss=0.3)
        wild = add_run(reg, "resnet18", params=BASE, acc=0.4, loss=2.0, epochs=0)
        for epoch, val in enumerate((2.0, 40.0, 1033.0), 1):
            reg.log_epoch(wild, epoch, {"train_loss": 1.5, "val_loss": val})
    auto = cli("plot", calm, wild, "-o", tmp_path / "auto.png")
    assert auto.exit_code == 0, auto.output
    assert "log y axis" in auto.stdout and f"run {wild} (resnet18) reaches 1033" in auto.stderr
    assert (tmp_path / "auto.png").stat().st_size > 0
    linear = cli("plot", calm, wild, "-o", tmp_path / "linear.png", "--linear-y")
    assert linear.exit_code == 0 and "log y axis" not in linear.stdout and linear.stderr == ""
    calm_only = cli("plot", calm, "-o", tmp_path / "calm.png")
    assert "log y axis" not in calm_only.stdout
    forced = cli("plot", calm, "-o", tmp_path / "forced.png", "--log-y")
    assert forced.exit_code == 0 and "log y axis" in forced.stdout


# ------------------------------------------------------------------------------- 13: the README main job


def test_the_readme_main_job_is_the_one_benchmarked_and_plans_8_epochs(cli, make_images):
    import shlex

    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install -e"))
    job = next(part.strip() for part in line.split("&&") if part.strip().startswith("zoo train"))
    assert job == "zoo train tinycnn --data demo --epochs 8 --image-size 32"
    assert f"`{job}`" in (ROOT / "BENCHMARKS.md").read_text()  # its measured time is recorded there
    assert (ROOT / "bench" / "main_job.py").is_file()
    images = make_images({"a": 10, "b": 10}, size=16)  # its plan on a small folder instead of generating demo
    args = [str(images) if a == "demo" else a for a in shlex.split(job)[1:]]
    planned = " ".join(cli(*args, "--dry-run").stdout.split())
    assert "epochs 8," in planned and "recipe scratch" in planned and "tinycnn 32 px" in planned
