"""ResNet-50 training throughput on a CUDA GPU: zoo end to end vs the compute limit, and vs the seed's loop.

Three measurements, same process, same GPU, same generated ImageFolder (JPEGs of photo-like size):
1. zoo: ``zoo.engine.train`` on the in-memory pipeline (decoded once, uint8 cache on the GPU, crops/flips/
   normalisation batched on the GPU, channels_last, bf16 autocast where supported), images/s of the train phase
   of the epochs after the first;
2. limit: forward + backward + SGD step of the same model, batch, size and precision on one batch already on
   the GPU (target: zoo / limit >= 0.90);
3. seed-style: what the seed experiment ran: torchvision ImageFolder + PIL transforms per read
   (RandomResizedCrop, flip, ToTensor, Normalize), DataLoader batch 4, fp32, no channels_last.

    python bench/gpu.py [--images 4096] [--batch-size 256] [--epochs 4] [--precision auto] [--seed-workers 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_folder(root: Path, count: int, workers: int) -> Path:
    """``count`` smooth random JPEGs of 500 x 375 px (the typical Oxford Pet / cats-vs-dogs photo), 2 classes."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        img = small.resize((500, 375), Image.BICUBIC)
        img.save(root / ("cat" if i % 2 else "dog") / f"{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return root


def compute_limit(model, batch: int, size: int, precision: str, batches: int, repeats: int) -> list[float]:
    import torch
    import torch.nn.functional as F

    from zoo.engine import autocast

    device = torch.device("cuda")
    model = model.to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    rates = []
    for r in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            with autocast(device, precision):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        torch.cuda.synchronize()
        if r:
            rates.append(batch * batches / (time.perf_counter() - start))
    return rates


def seed_loop(root: Path, size: int, batches: int, workers: int) -> float:
    """The seed's way: PIL transforms on every read, batch 4, fp32; images/s over ``batches`` batches."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision import transforms

    device = torch.device("cuda")
    tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406],
                                                                         [0.229, 0.224, 0.225])])
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(str(root), tf), batch_size=4,
                                         shuffle=True, num_workers=workers)
    model = torchvision.models.resnet50(num_classes=2).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    warmup, seen, start = 10, 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the seed logged the loss of every batch
        if i >= warmup:
            seen += len(y)
        if i == warmup + batches:
            break
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4, help="zoo epochs (the first is not counted)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed-batches", type=int, default=150)
    parser.add_argument("--seed-workers", type=int, default=0, help="DataLoader workers of the seed-style loop")
    parser.add_argument("--model", default="resnet50")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(f"bench/gpu.py needs a CUDA GPU; none is available to torch {torch.__version__} here. "
              f"Run bench/throughput.py for the CPU numbers.", file=sys.stderr)
        return 2

    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.engine import resolve_precision, train
    from zoo.spec import Resolved, RunSpec
    from zoo.plugins import build_plugins

    device = torch.device("cuda")
    precision = resolve_precision(args.precision, device)
    info = build_plugins(autoload=False).models().get(args.model)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, precision {precision}, "
          f"batch {args.batch_size}, {args.size} px, {args.images} images, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = make_folder(Path(tmp) / "data", args.images, min(16, os.cpu_count() or 1))
        t1 = time.perf_counter()
        images = load_images(root, image_sizes=[args.size])
        t2 = time.perf_counter()
        split = split_samples(images, (8, 1, 1), 42)
        print(f"generated in {t1 - t0:.1f}s; checked + decoded once in {t2 - t1:.1f}s "
              f"({len(images.samples) / (t2 - t1):.0f} images/s), cache {tuple(images.cache.shape)}")

        pipe = make_pipeline(images, split, image_size=args.size, batch_size=args.batch_size, device=device)
        config = RunSpec(args.model, "bench", epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs,
                         lr=1e-4)
        resolved = Resolved(str(pipe.device), precision, args.size)
        result = train(info, pipe, images.classes, config, resolved)
        zoo_rates = [h.images_per_sec for h in result.history[1:]]
        del pipe, result
        torch.cuda.empty_cache()

        torch.manual_seed(0)
        limit_rates = compute_limit(info.build(2), args.batch_size, args.size, precision,
                                    batches=len(split.train) // args.batch_size, repeats=3)
        torch.cuda.empty_cache()
        seed = seed_loop(root, args.size, args.seed_batches, args.seed_workers)

    zoo, limit = statistics.median(zoo_rates), statistics.median(limit_rates)
    print(f"zoo end to end   {zoo:9.1f} images/s   (epochs 2..: {', '.join(f'{r:.0f}' for r in zoo_rates)})")
    print(f"compute limit    {limit:9.1f} images/s   (same model, batch, size, precision)")
    print(f"seed-style loop  {seed:9.1f} images/s   (batch 4, fp32, PIL transforms per read, "
          f"{args.seed_workers} workers)")
    print(f"zoo / limit = {zoo / limit:.3f} (target >= 0.90); zoo / seed-style = {zoo / seed:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
