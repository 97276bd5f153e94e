"""Issue 19 (5): the weight EMA (--ema), test-time flip (--tta) and the stopping rule of --patience-lr."""

from __future__ import annotations

import math
import os

import pytest

from zoo.spec import RECIPES, Resolved, RunSpec
from zoo.store import Registry


def registry() -> Registry:
    return Registry.open(os.environ["ZOO_REGISTRY"])


# ------------------------------------------------------------------------------------------ the stopping rule


def stopped_at(losses, lrs, patience, patience_lr):
    """The epoch EarlyStopping ends a run of these val losses and lrs at (None: it runs to the end)."""
    from zoo.engine import StopTraining
    from zoo.engine.stopping import EarlyStopping

    stopping = EarlyStopping(patience, 0.0, patience_lr)
    for epoch, (loss, lr) in enumerate(zip(losses, lrs), 1):
        try:
            stopping.on_epoch_end(None, epoch, {"val_loss": loss, "lr": lr})
        except StopTraining:
            return epoch, stopping.best_epoch
    return None, stopping.best_epoch


def test_patience_is_counted_only_once_the_lr_has_annealed():
    # 2 epochs of warm-up, then a cosine over 18 epochs; the loss is best at epoch 4, then noise above it
    # until it improves late (epochs 14-18), as a cosine schedule does.
    lrs = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * e / 18)) for e in range(1, 19)]
    losses = [1.0, 0.8, 0.6, 0.5] + [0.55, 0.6, 0.52, 0.58, 0.56, 0.57, 0.6, 0.53, 0.54, 0.45, 0.44, 0.43, 0.42,
                                     0.41, 0.42, 0.43]
    assert len(lrs) == len(losses) == 20
    assert stopped_at(losses, lrs, 5, 1.0) == (9, 4)  # from the first epoch: cut off mid-way, best epoch 4
    # 0.5: epochs count from epoch 11 on (lr at half the peak): the late improvement is reached
    assert [i for i, lr in enumerate(lrs, 1) if lr <= 0.5][1:2] == [11]  # (epoch 1 is warm-up, below the peak)
    assert stopped_at(losses, lrs, 5, 0.5) == (None, 18)
    assert stopped_at(losses, lrs, 2, 0.5) == (12, 4)  # patience still ends an annealed run: epochs 11 and 12
    # a constant lr never anneals: with a fraction below 1 the run goes on to --epochs
    assert stopped_at([1.0] + [2.0] * 30, [0.1] * 31, 3, 0.5) == (None, 1)
    # the warm-up's rising lr is never "annealed", even though its first value is below half the peak
    assert stopped_at([1.0, 2.0, 2.0, 2.0], [0.04, 0.5, 1.0, 1.0], 1, 0.5) == (None, 1)


def test_the_stopping_state_resumes():
    from zoo.engine.stopping import EarlyStopping

    one = EarlyStopping(3, 0.0, 0.5)
    one.on_epoch_end(None, 1, {"val_loss": 1.0, "lr": 0.2})
    two = EarlyStopping(3, 0.0, 0.5)
    two.load_state_dict(one.state_dict())
    assert two.state_dict() == one.state_dict() and two.peak_lr == 0.2
    old = {"best_loss": 1.0, "best_epoch": 1, "waited": 0}  # a last.pt written before peak_lr
    two.load_state_dict(old)
    assert two.peak_lr == 0.0


def test_recipes_keep_patience_from_the_first_epoch_for_seed_and_old_runs():
    assert RECIPES["seed"]["patience_lr"] == 1.0
    old = RunSpec("tinycnn", "d", recipe="scratch").to_params(Resolved("cpu", "fp32", 16))
    del old["patience_lr"]  # a run recorded before --patience-lr
    assert RunSpec.from_params(old, "tinycnn").with_recipe().patience_lr == 1.0


# ------------------------------------------------------------------------------------------- test-time flip


def test_flip_average_is_the_mean_softmax_of_the_image_and_its_mirror():
    import torch

    from zoo.engine.ema import flip_average

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    x = torch.randn(5, 3, 4, 4)
    want = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    out = flip_average(model)(x)
    assert torch.allclose(out.softmax(1), want, atol=1e-6)
    assert torch.allclose(torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0, 1])),
                          -want[range(5), [0, 1, 2, 0, 1]].log().mean(), atol=1e-6)
    assert not torch.allclose(out.softmax(1), model(x).softmax(1), atol=1e-3)  # flips change these
    symmetric = torch.cat([x[..., :2], x[..., :2].flip(-1)], -1)  # mirrored left-right onto itself
    assert torch.allclose(flip_average(model)(symmetric).softmax(1), model(symmetric).softmax(1), atol=1e-6)


# --------------------------------------------------------------------------------------- the CLI, end to end


def test_bad_ema_and_patience_lr_are_one_red_line(cli, make_images):
    data = make_images({"cat": 6, "dog": 6}, size=16)
    for args, message in ((("--ema", "1.5"), "--ema 1.5: must be below 1"),
                          (("--ema", "0"), "--ema 0.0: must be greater than 0"),
                          (("--patience-lr", "2"), "--patience-lr 2.0: must be at most 1")):
        result = cli("train", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "16", *args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not os.path.exists(os.environ["ZOO_REGISTRY"]) or not registry().list_runs()


def test_ema_and_tta_are_recorded_only_when_used_and_a_resumed_ema_run_is_the_uninterrupted_one(
        cli, make_images, ctrl_c_after_epoch):
    data = make_images({"cat": 10, "dog": 10}, size=16)
    options = ("tinycnn", "--data", data, "--epochs", "4", "--patience", "9", "--image-size", "16",
               "--batch-size", "4", "--ema", "0.9", "--tta")
    whole = cli("train", *options)
    assert whole.exit_code == 0, whole.output
    assert "ema 0.9, tta" in whole.output
    undo = ctrl_c_after_epoch(2)
    assert cli("train", *options).exit_code == 130
    undo()
    reg = registry()
    assert reg.get_run(2).status == "interrupted"
    resumed = cli("train", "--resume", "2")
    assert resumed.exit_code == 0, resumed.output
    one, two = reg.get_run(1), reg.get_run(2)
    assert two.status == "completed" and two.epochs_run == 4
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert reg.history(2)[key] == reg.history(1)[key], key
    assert two.metrics == one.metrics and two.best_epoch == one.best_epoch
    assert (one.params["ema"], one.params["tta"]) == (0.9, True)
    # best.pt holds the averaged weights and `zoo evaluate` flips as the run was tested: the run's own figures
    import json

    evaluated = json.loads(cli("evaluate", "1", "--format", "json").output)["metrics"]
    assert evaluated["test_loss"] == pytest.approx(one.metrics["test_loss"], rel=1e-5)
    assert cli("evaluate", "1", "--no-tta", "--format", "json").exit_code == 0
    assert cli("predict", "1", data, "--tta").exit_code == 0
    plain = cli("train", "tinycnn", "--data", data, "--epochs", "4", "--patience", "9", "--image-size", "16",
                "--batch-size", "4")
    assert plain.exit_code == 0, plain.output
    three = reg.get_run(3)
    assert "ema" not in three.params and "tta" not in three.params  # rows of runs without them stay as they were
    # the EMA is what is validated: the same seed without it validates other weights, trains the same ones
    assert reg.history(3)["train_loss"][:1] == reg.history(1)["train_loss"][:1]
    assert reg.history(3)["val_loss"] != reg.history(1)["val_loss"]
    again = cli("train", "--from", "1", "--epochs", "1")
    assert again.exit_code == 0, again.output
    assert (reg.get_run(4).params["ema"], reg.get_run(4).params["tta"]) == (0.9, True)


def test_an_ema_run_trains_the_same_weights_and_tests_the_averaged_ones(make_images):
    import torch

    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.engine import Callback, train
    from zoo.plugins import build_plugins

    root = make_images({"cat": 12, "dog": 12}, size=24)
    images = load_images(root, image_sizes=[16])
    split = split_samples(images, (4, 1, 1), 42)
    info = build_plugins(autoload=False).models().get("tinycnn")

    class Weights(Callback):  # the trained weights at each epoch's end, after every built-in
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, run, epoch, logs):
            self.seen.append([t.detach().clone() for t in run.model.parameters()])

    def run(**extra):
        pipe = make_pipeline(images, split, image_size=16, batch_size=8, device="cpu")
        spec = RunSpec("tinycnn", str(root), epochs=2, patience=9, batch_size=8, **extra)
        keeper = Weights()
        result = train(info, pipe, images.classes, spec, Resolved("cpu", "fp32", 16), callbacks=[keeper])
        return result, keeper.seen

    plain, plain_weights = run()
    ema, ema_weights = run(ema=0.5)
    for a, b in zip(plain_weights, ema_weights):  # training goes on with its own weights
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [h.train_loss for h in plain.history] == [h.train_loss for h in ema.history]
    assert [h.val_loss for h in plain.history] != [h.val_loss for h in ema.history]


def test_tta_tests_on_the_mean_softmax_of_each_test_image_and_its_mirror(make_images):
    import torch

    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.engine import Callback, train
    from zoo.plugins import build_plugins

    root = make_images({"cat": 12, "dog": 12}, size=24)  # cats: horizontal stripes, the same mirrored
    images = load_images(root, image_sizes=[16])
    split = split_samples(images, (4, 1, 1), 42)
    info = build_plugins(autoload=False).models().get("tinycnn")

    class Tested(Callback):  # the weights the test saw
        def on_train_end(self, run, result):
            self.model = run.model

    def run(tta):
        pipe = make_pipeline(images, split, image_size=16, batch_size=8, device="cpu")
        spec = RunSpec("tinycnn", str(root), epochs=1, patience=9, batch_size=8, tta=tta)
        tested = Tested()
        result = train(info, pipe, images.classes, spec, Resolved("cpu", "fp32", 16), callbacks=[tested])
        return result, tested.model.eval(), pipe

    plain, model, pipe = run(False)
    flipped, _, _ = run(True)
    x, y = map(torch.cat, zip(*pipe.eval_batches("test")))
    with torch.inference_mode():
        one = model(x).softmax(1)
        both = (one + model(x.flip(-1)).softmax(1)) / 2
    assert [p for _, p in plain.predictions] == pytest.approx(one.max(1).values.tolist(), abs=1e-6)
    assert [p for _, p in flipped.predictions] == pytest.approx(both.max(1).values.tolist(), abs=1e-6)
    assert flipped.metrics["test_loss"] == pytest.approx(float(-both[range(len(y)), y].log().mean()), rel=1e-5)
    cats = y == images.classes.index("cat")
    assert torch.allclose(one[cats], both[cats], atol=1e-3)  # mirror-symmetric images: (nearly) the same
    assert not torch.allclose(one[~cats], both[~cats], atol=1e-5)
