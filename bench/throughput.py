"""Training throughput of zoo's engine vs the compute limit of the same model, batch and size, on this CPU.

For each model (tinycnn, resnet18, alexnet) and size (64, 224 px):
- zoo: ``zoo.engine.train`` on a generated ImageFolder decoded into memory (the real pipeline: random resized
  crops, flips and normalisation from the uint8 cache, loss/accuracy accounting, callbacks); images/s of the
  train phase of the epochs after the first, as the engine records them in each epoch's history;
- limit: forward + backward + SGD step on one batch of tensors already in memory, same model, batch and size,
  timed over the same number of batches, in the same process.
The two are measured in alternation (one limit measurement after each zoo epoch), so that both see the same
load when the CPU is shared; ratio = median over epochs 2.. of zoo / limit (target >= 0.97). Columns: median
images/s of each side, the ratio, and best zoo epoch / best limit repeat.

    python bench/throughput.py [--models tinycnn,resnet18,alexnet] [--sizes 64,224] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_folder(root: Path, per_class: int, side: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (side, side + 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:04d}.jpg", quality=90)
    return root


class ComputeLimit:
    """forward + backward + SGD step on one fixed in-memory batch (channels_last, as zoo uses): images/s."""

    def __init__(self, model, batch: int, size: int, batches: int):
        import torch

        self.model = model.to(memory_format=torch.channels_last).train()
        self.x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 2, (batch,))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        self.batches = batches
        self()  # warm-up

    def __call__(self) -> float:
        import torch.nn.functional as F

        start = time.perf_counter()
        for _ in range(self.batches):
            loss = F.cross_entropy(self.model(self.x), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return len(self.y) * self.batches / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tinycnn,resnet18,alexnet")
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--epochs", type=int, default=7, help="zoo epochs per case (the first is not counted)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", default="seed", help="augmentation preset: seed, light, strong, none")
    args = parser.parse_args()

    import torch

    from zoo.data import augment_for, load_images, make_pipeline, split_samples
    from zoo.engine import Callbacks, train
    from zoo.spec import Resolved, RunSpec
    from zoo.plugins import build_plugins

    registry = build_plugins(autoload=False).models()
    sizes = [int(s) for s in args.sizes.split(",")]
    bs = args.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':10} {'size':>5} {'batches':>7} {'zoo img/s':>10} {'limit img/s':>12} {'ratio':>6} "
          f"{'(best/best)':>12}")
    worst = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            # 2 classes x per_class images: 8:1:1 gives a train split of a whole number of batches
            batches = 5 if size >= 160 else 12
            per_class = batches * bs * 10 // 16
            root = make_folder(Path(tmp) / f"s{size}", per_class, max(size + size // 7, 40))
            images = load_images(root, image_sizes=[size])
            split = split_samples(images, (8, 1, 1), 42)
            assert len(split.train) == batches * bs, len(split.train)
            for name in args.models.split(","):
                info = registry.get(name)
                pipe = make_pipeline(images, split, image_size=size, batch_size=bs, device="cpu",
                                     augment=augment_for(args.augment))
                config = RunSpec(name, "bench", epochs=args.epochs, batch_size=bs, patience=args.epochs, lr=1e-4,
                                 recipe="seed")
                resolved = Resolved("cpu", "fp32", size)
                torch.manual_seed(0)
                limit = ComputeLimit(info.build(2), bs, size, batches)
                limit_rates: list[float] = []

                class Interleave(Callbacks):  # one limit measurement after each zoo epoch: same CPU weather
                    def on_epoch_end(self, epoch, values, improved):
                        if epoch > 1:
                            limit_rates.append(limit())

                result = train(info, pipe, images.classes, config, resolved, Interleave())
                zoo_rates = [h.images_per_sec for h in result.history[1:]]
                ratio = statistics.median(z / l for z, l in zip(zoo_rates, limit_rates))
                best = max(zoo_rates) / max(limit_rates)
                worst = ratio if worst is None else min(worst, ratio)
                print(f"{name:10} {size:>5} {batches:>7} {statistics.median(zoo_rates):>10.1f} "
                      f"{statistics.median(limit_rates):>12.1f} {ratio:>6.3f} {best:>12.3f}", flush=True)
    print(f"worst ratio {worst:.3f} (target >= 0.97); load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
