"""Does the default recipe hold on every seed? zoo's recipe against a plain torch one-cycle loop (and fastai).

    pip install scikit-learn scikit-image [fastai]    # the data sets (bench/recipes.py); fastai when it installs
    python bench/seeds.py [--set digits] [--size 16] [--seeds 42,0,1,2] [--model tinycnn]
                          [--arms "default,onecycle,fastai"] [--onecycle-epochs 30]

For one real set of bench/recipes.py (digits at 16 px by default; textures or photos at 32 px), each arm trains
once per seed on the same split (zoo's 8:1:1 with split seed 42) and is tested on the same test images:

- zoo arms: ``zoo train MODEL --data SET --image-size PX --seed S`` through zoo's own session (the default recipe),
  or with options, written NAME=option:value;option:value (``old=patience_lr:1.0``, ``ema=ema:0.99``).
- ``onecycle``: the same architecture from zoo's model builder (same seed, same initial weights as zoo's run), the
  same images at the same size and normalisation (zoo's eval transform, no augmentation), AdamW (weight decay
  0.01) with torch's OneCycleLR (max lr ``--onecycle-lr``), batch 32, a fixed ``--onecycle-epochs``; the last
  epoch's weights are tested (no validation, no early stopping).
- ``fastai``: the same model and tensors through fastai's ``Learner.fit_one_cycle`` (its defaults: Adam,
  weight decay 0.01, lr_max ``--onecycle-lr``), when fastai is installed; otherwise the arm says so.

Prints each seed's test accuracy and wall time, then per arm: mean, min, max and the total time.

``--trace`` (zoo arms): also tests every epoch's weights (on the test split, for this analysis only: nothing is
chosen by it) and prints, from that one run, what other stopping rules would have ended with: patience counted
from the first epoch (``patience_lr`` 1), from the cosine's middle (0.5), and the checkpoint chosen by validation
accuracy with the loss as tie-break. A run's epochs are the same under every rule until one of them stops it, so
one run with the latest-stopping rule answers for all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tensors(folder: Path, model: str, size: int):
    """(train x, train y, test x, test y) as zoo's eval transform makes them, on zoo's split, and the model info."""
    import torch

    from zoo.data import center_crops, load_images, normalise, split_samples
    from zoo.plugins import get_plugins

    info = get_plugins().models().get(model)
    images = load_images(folder, image_sizes=[size])
    split = split_samples(images, (8, 1, 1), 42)
    labels = torch.tensor([s.label for s in images.samples])
    out = []
    for part in (split.train, split.test):
        idx = torch.tensor(part, dtype=torch.long)
        crops = center_crops(images.cache[idx], size, prep=info.preprocess)
        out += [normalise(crops, info.preprocess.mean, info.preprocess.std).contiguous(), labels[idx]]
    return (*out, info, len(images.classes))


def accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        return float((torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(y), 256)]) == y)
                     .float().mean())


def onecycle(data, seed: int, epochs: int, lr: float) -> float:
    """A plain torch loop: AdamW + OneCycleLR stepped per batch, batch 32, shuffled by a seeded generator."""
    import torch

    from zoo.engine import seed_everything

    x, y, x_test, y_test, info, classes = data
    seed_everything(seed)
    model = info.build(classes, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = (len(y) + 31) // 32
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), 32):
            batch = order[i:i + 32]
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return accuracy(model, x_test, y_test)


def fastai_arm(data, seed: int, epochs: int, lr: float) -> float:
    """fastai's fit_one_cycle on the same model and tensors (its defaults otherwise)."""
    from fastai.vision.all import DataLoaders, Learner, set_seed  # .all: fit_one_cycle, no_bar are patched in

    from zoo.engine import seed_everything

    x, y, x_test, y_test, info, classes = data
    seed_everything(seed)
    model = info.build(classes, pretrained=False)
    set_seed(seed)
    train = list(zip(x, y))
    dls = DataLoaders.from_dsets(train, list(zip(x_test[:64], y_test[:64])), bs=32, device="cpu")
    learn = Learner(dls, model, loss_func=__import__("torch").nn.CrossEntropyLoss())
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, lr)
    return accuracy(learn.model, x_test, y_test)


class TestTrace:
    """A callback: each epoch's lr, validation loss and accuracy, and the test accuracy of its weights."""

    def __init__(self, x, y) -> None:
        self.x, self.y, self.rows = x, y, []

    def on_epoch_end(self, run, epoch, logs) -> None:
        self.rows.append((epoch, logs["lr"], logs["val_loss"], logs["val_acc"], accuracy(run.model, self.x, self.y)))


def stop_rule(rows, patience: int, patience_lr: float) -> tuple[int, int]:
    """(stop epoch, best epoch) of EarlyStopping over the traced rows."""
    from zoo.engine import StopTraining
    from zoo.engine.stopping import EarlyStopping

    rule = EarlyStopping(patience, 0.0, patience_lr)
    for epoch, lr, val_loss, _, _ in rows:
        try:
            rule.on_epoch_end(None, epoch, {"val_loss": val_loss, "lr": lr})
        except StopTraining:
            return epoch, rule.best_epoch
    return rows[-1][0], rule.best_epoch


def traced(folder: Path, model: str, size: int, options: dict, test) -> tuple[float, float, int, list]:
    """run_recipe with a TestTrace: (test accuracy, seconds, epochs, the trace rows)."""
    import recipes

    from zoo.training import session

    trace = TestTrace(*test)

    def train_fn(ctx):
        ctx.callbacks = [*ctx.callbacks, trace]
        return session.train_run(ctx)

    acc, seconds, epochs = recipes.run_recipe(folder, model, size, options, train_fn=train_fn)
    return acc, seconds, epochs, trace.rows


def report_trace(rows, patience: int) -> None:
    by_epoch = {r[0]: r for r in rows}
    for label, fraction in (("patience from epoch 1", 1.0), ("patience_lr 0.5", 0.5)):
        stop, best = stop_rule(rows, patience, fraction)
        print(f"    {label:28} stop {stop:3d} best {best:3d} test acc {by_epoch[best][4]:.4f}", flush=True)
    for label, fraction in (("val acc, loss tie-break", 1.0), ("... with patience_lr 0.5", 0.5)):
        stop, _ = stop_rule(rows, patience, fraction)
        best = min((r for r in rows if r[0] <= stop), key=lambda r: (-r[3], r[2]))[0]
        print(f"    {label:28} stop {stop:3d} best {best:3d} test acc {by_epoch[best][4]:.4f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="digits")
    parser.add_argument("--size", type=int, default=None, help="px (default: 16 for digits, else 32)")
    parser.add_argument("--seeds", default="42,0,1,2")
    parser.add_argument("--model", default="tinycnn")
    parser.add_argument("--arms", default="default,onecycle,fastai")
    parser.add_argument("--onecycle-epochs", type=int, default=30)
    parser.add_argument("--onecycle-lr", type=float, default=1e-2)
    parser.add_argument("--trace", action="store_true", help="zoo arms: test every epoch, compare stopping rules")
    args = parser.parse_args()
    os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    from recipes import make_set, parse_recipe, run_recipe

    from zoo.data import cache_root

    size = args.size or (16 if args.set == "digits" else 32)
    seeds = [int(s) for s in args.seeds.split(",")]
    folder = make_set(args.set, cache_root() / "bench-recipes")
    data = None
    print(f"set {args.set} at {size} px, model {args.model}, seeds {seeds}; load average "
          f"{os.getloadavg()[0]:.1f} at the start", flush=True)
    print(f"{'arm':24} {'seed':>5} {'test acc':>8} {'epochs':>6} {'time':>7}", flush=True)
    summary = []
    for text in args.arms.split(","):
        name, options = ("default", {}) if text == "default" else parse_recipe(text)
        if text in ("onecycle", "fastai"):
            name = f"{text} ({args.onecycle_epochs} ep)"
        accs, total = [], 0.0
        for seed in seeds:
            if text in ("onecycle", "fastai"):
                if text == "fastai":
                    try:
                        import fastai  # noqa: F401
                    except ImportError:
                        print(f"{name:24} fastai is not installed here: skipped", flush=True)
                        break
                data = data or tensors(folder, args.model, size)  # decoded once, not timed
                started = time.perf_counter()
                arm = onecycle if text == "onecycle" else fastai_arm
                acc, epochs = arm(data, seed, args.onecycle_epochs, args.onecycle_lr), args.onecycle_epochs
                seconds = time.perf_counter() - started
            else:
                options = {k: v for k, v in options.items() if not (text == "default" and k == "recipe")}
                started = time.perf_counter()
                if args.trace:
                    data = data or tensors(folder, args.model, size)
                    started = time.perf_counter()
                    acc, _, epochs, rows = traced(folder, args.model, size, {**options, "seed": seed}, data[2:4])
                else:
                    acc, _, epochs = run_recipe(folder, args.model, size, {**options, "seed": seed})
                seconds = time.perf_counter() - started  # decoding and splitting included, as a user waits
            accs.append(acc)
            total += seconds
            print(f"{name:24} {seed:5d} {acc:8.4f} {epochs:6d} {seconds:6.0f}s", flush=True)
            if args.trace and text not in ("onecycle", "fastai"):
                from zoo.spec import RunSpec

                report_trace(rows, RunSpec("m", "d", **options).with_recipe().patience)
        if accs:
            summary.append((name, accs, total))
    print(f"\n{'arm':24} {'mean':>7} {'min':>7} {'max':>7} {'time':>7}   (load average {os.getloadavg()[0]:.1f} "
          f"at the end)")
    for name, accs, total in summary:
        print(f"{name:24} {sum(accs) / len(accs):7.4f} {min(accs):7.4f} {max(accs):7.4f} {total:6.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
