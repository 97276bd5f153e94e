"""The open core: a plugin outside the repository adds an optimizer (with its own --opt), a schedule, a loss, a
metric and a logging callback; all five work in a grid, rank, show, and survive resume."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from zoo.store import Registry

PLUGIN = textwrap.dedent('''
    import json

    import zoo


    def rmsprop(params, config):
        import torch

        return torch.optim.RMSprop(params, lr=config.lr, alpha=config.options["alpha"])


    def linear_decay(optimizer, config, steps_per_epoch):
        import torch

        total = config.epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.05, 1 - step / total))


    def focal(config):
        import torch

        class Focal(torch.nn.Module):
            def forward(self, logits, targets):
                ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                return ((1 - torch.exp(-ce)) ** config.options["gamma"] * ce).mean()

        return Focal()


    def error_rate(y_true, y_pred, probs):
        return (y_true != y_pred).float().mean().item()


    class EpochLog:
        """Writes one JSON line per epoch to the run's folder; counts the epochs it has seen (resumable)."""

        def __init__(self, config):
            self.seen = 0

        def on_epoch_end(self, run, epoch, logs):
            self.seen += 1
            line = {"run": run.id, "epoch": epoch, "seen": self.seen, "val_loss": logs["val_loss"],
                    "lr": logs["lr"], "images_per_sec": logs["images_per_sec"]}
            with open(run.artifacts_dir / "epochlog.jsonl", "a") as out:
                out.write(json.dumps(line) + "\\n")

        def state_dict(self):
            return {"seen": self.seen}

        def load_state_dict(self, state):
            self.seen = state["seen"]


    @zoo.hookimpl
    def register_optimizers(register):
        register("rmsprop", rmsprop, options={"alpha": 0.99})


    @zoo.hookimpl
    def register_schedules(register):
        register("linear_decay", linear_decay)


    @zoo.hookimpl
    def register_losses(register):
        register("focal", focal, options={"gamma": 2.0})


    @zoo.hookimpl
    def register_metrics(register):
        register("error_rate", error_rate, higher_is_better=False)


    @zoo.hookimpl
    def register_callbacks(register):
        register("epochlog", EpochLog)
''')


@pytest.fixture
def plugged(tmp_path, monkeypatch):
    import zoo.plugins

    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "extras.py").write_text(PLUGIN)
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(folder))
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")
    zoo.plugins.reset()
    yield
    zoo.plugins.reset()


def epoch_log(reg: Registry, run_id: int) -> list[dict]:
    path = reg.run_artifacts_dir(run_id) / "epochlog.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_plugin_adds_all_five_parts_and_they_work_in_a_grid(plugged, cli, make_images):
    data = make_images({"cat": 8, "dog": 8}, size=16)
    parts = ("--optimizer", "rmsprop", "--schedule", "linear_decay", "--loss", "focal", "--callback", "epochlog",
             "--lr", "0.001")
    result = cli("train", "tinycnn", "--data", data, "--epochs", "2", "--image-size", "16", *parts,
                 "--opt", "alpha=0.9,0.95")
    assert result.exit_code == 0, result.output
    reg = Registry.open(os.environ["ZOO_REGISTRY"])
    runs = [reg.get_run(1), reg.get_run(2)]
    assert [r.params["opt.alpha"] for r in runs] == [0.9, 0.95]
    assert all(r.params["optimizer"] == "rmsprop" and r.params["schedule"] == "linear_decay" and
               r.params["loss"] == "focal" and r.params["callbacks"] == "epochlog" for r in runs)
    assert all(r.status == "completed" and "test_error_rate" in r.metrics for r in runs)
    assert all(r.metrics["test_error_rate"] == pytest.approx(1 - r.metrics["test_accuracy"]) for r in runs)
    assert all(r.metrics["test_balanced_accuracy"] >= 0 and "test_macro_auroc" in r.metrics for r in runs)
    assert "test_top5_accuracy" not in runs[0].metrics  # 2 classes: top-5 would always be 1
    lrs = [v for _, v in reg.history(1)["lr"]]
    assert lrs[1] < lrs[0]  # the plugin's schedule decays the lr
    assert [(e["epoch"], e["seen"]) for e in epoch_log(reg, 1)] == [(1, 1), (2, 2)]

    ranked = cli("compare", "--metric", "error_rate", "--format", "json")
    assert ranked.exit_code == 0, ranked.output
    rows = json.loads(ranked.output)
    assert [r["metric"] for r in rows] == ["test_error_rate"] * 2
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows)  # lower is better, as declared
    assert "↓" in cli("compare", "--metric", "error_rate").output
    assert "error_rate" in cli("show", "1").output
    shown = cli("plugins")
    assert "register_losses: focal" in shown.output and "register_metrics: error_rate" in shown.output

    # the report and the ui list the plugin's metric beside the built-in ones, as the registry recorded it
    report = data.parent / "report.md"
    assert cli("report", "1", "2", "-o", report).exit_code == 0
    text = report.read_text()
    assert "| error rate |" in text and f"{runs[0].metrics['test_error_rate']:.4f}" in text
    from starlette.testclient import TestClient

    from zoo.web.app import create_app

    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True, create=False) as readonly:
        client = TestClient(create_app(readonly), base_url="http://127.0.0.1")
        page = client.get("/runs/1")
        assert page.status_code == 200 and "error_rate" in page.text
        compared = client.get("/compare?run=1,2&metric=error_rate")
        assert compared.status_code == 200 and "Ranked by error_rate, lower is better" in compared.text
        assert 'data-chart="test_error_rate"' in compared.text  # its bar chart, from the recorded values


def test_unknown_parts_and_options_are_one_line_before_any_work(plugged, cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    for args, message in [(("--loss", "nope"), "--loss 'nope' is not one of cross_entropy, focal"),
                          (("--callback", "nope"), "--callback 'nope' is not one of mlflow, tensorboard, epochlog"),
                          (("--optimizer", "rmsprop", "--opt", "beta=1"), "--opt beta: no part of this run reads it"),
                          (("--optimizer", "rmsprop", "--opt", "alpha=high"), "--opt alpha='high': must be float")]:
        result = cli("train", "tinycnn", "--data", data, "--epochs", "1", *args)
        assert result.exit_code == 1 and message in result.output, result.output


def test_a_plugin_callback_survives_resume(plugged, cli, make_images, ctrl_c_after_epoch):
    data = make_images({"cat": 8, "dog": 8}, size=16)
    undo = ctrl_c_after_epoch(2)
    options = ("tinycnn", "--data", data, "--epochs", "3", "--patience", "9", "--image-size", "16",
               "--callback", "epochlog", "--loss", "focal", "--opt", "gamma=1.5")
    assert cli("train", *options).exit_code == 130
    undo()
    resumed = cli("train", "--resume", "1")
    assert resumed.exit_code == 0, resumed.output
    reg = Registry.open(os.environ["ZOO_REGISTRY"])
    assert reg.get_run(1).status == "completed" and reg.get_run(1).params["opt.gamma"] == 1.5
    assert [(e["epoch"], e["seen"]) for e in epoch_log(reg, 1)] == [(1, 1), (2, 2), (3, 3)]


def test_a_callback_stops_training_with_a_reason_of_its_own(make_images, tmp_path):
    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.engine import Callback, StopTraining, train
    from zoo.plugins import build_plugins
    from zoo.spec import Resolved, RunSpec
    from zoo.vocab import Status

    root = make_images({"cat": 8, "dog": 8}, size=16)
    images = load_images(root, image_sizes=[16])
    pipe = make_pipeline(images, split_samples(images, (4, 1, 1), 42), image_size=16, batch_size=8, device="cpu")
    plugins = build_plugins(autoload=False)
    seen = []

    class Prune(Callback):
        def on_epoch_end(self, run, epoch, logs):
            seen.append((run.config.lr, sorted(k for k in logs if not k.startswith("_"))))
            raise StopTraining("pruned")

    class After(Callback):  # called after the one that stopped: it still sees the epoch
        def on_epoch_end(self, run, epoch, logs):
            seen.append(epoch)

    result = train(plugins.models().get("tinycnn"), pipe, images.classes, RunSpec("tinycnn", "x", epochs=5, lr=0.01),
                   Resolved("cpu", "fp32", 16), [Prune(), After()], tmp_path / "best.pt", plugins=plugins)
    assert result.status == Status.COMPLETED and result.stop_reason == "pruned" and result.epochs_run == 1
    assert "test_accuracy" in result.metrics and result.checkpoint == str(tmp_path / "best.pt")
    assert seen[0][0] == 0.01 and {"train_loss", "val_loss", "val_accuracy", "lr", "images_per_sec"} <= set(seen[0][1])
    assert seen[1] == 1 and not (tmp_path / "last.pt").exists()


def test_the_builtin_metrics_on_hand_computed_cases():
    import torch

    from zoo.engine.metrics import test_metrics
    from zoo.plugins import build_plugins

    table = build_plugins(autoload=False).components("metric")
    fns = {c.name: c.builder for c in table.values()}
    y = torch.tensor([0, 0, 0, 1])
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.6, 0.4]])
    pred = probs.argmax(1)  # 0, 0, 1, 0: class 0 recalled 2 of 3, class 1 0 of 1
    assert fns["balanced_accuracy"](y, pred, probs) == pytest.approx((2 / 3 + 0) / 2)
    # class 1's one positive (0.4) is above one negative (0.1), tied with one (0.4), below one (0.7): 1.5 / 3;
    # class 0's the same pairs seen from the other side
    assert fns["macro_auroc"](y, pred, probs) == pytest.approx(0.5)
    six = torch.tensor([[6.0, 5, 4, 3, 2, 1], [6.0, 5, 4, 3, 2, 1]]).softmax(1)  # class 1 ranks 2nd, class 5 last
    assert fns["top5_accuracy"](torch.tensor([1, 5]), six.argmax(1), six) == 0.5
    two = test_metrics([[2, 1], [1, 0]], ["a", "b"], 0.5, y, probs, table)
    assert "test_top5_accuracy" not in two and two["test_balanced_accuracy"] == pytest.approx(1 / 3)
