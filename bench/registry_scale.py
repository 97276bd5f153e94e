"""How fast `zoo list-runs` and `zoo compare` stay on a big registry, relative to `python -c "import torch"`.

Fills a registry with 10,000 runs of 30 epochs each (bulk Core inserts, not the lifecycle API), then times each
command as a fresh subprocess (median of several) and divides by the median time of `python -c "import torch"`
measured in the same run. Target: both ratios <= 0.25.

    python bench/registry_scale.py [--runs 10000] [--epochs 30] [--repeat 7] [--keep registry.db]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from zoo.store import Registry, schema

MODELS = ["tinycnn", "alexnet", "resnet18", "resnet34", "resnet50", "vgg11", "mobilenet_v3_small",
          "efficientnet_b0", "densenet121", "convnext_tiny"]
CLASSES = ["cat", "dog", "bird", "fish"]
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_sec")


def fill(path: Path, runs: int, epochs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    with Registry.open(path) as reg, reg._write() as conn:
        run_rows, params, history, metrics, tags = [], [], [], [], []
        for run_id in range(1, runs + 1):
            model = MODELS[run_id % len(MODELS)]
            started = start + timedelta(minutes=7 * run_id)
            status = rng.choices(["completed", "failed", "interrupted"], [0.9, 0.05, 0.05])[0]
            run_rows.append(dict(
                id=run_id, uuid=uuid.UUID(int=rng.getrandbits(128)).hex, name=None, model=model, plugin="builtin",
                status=status, created=started, started=started, finished=started + timedelta(minutes=5),
                heartbeat=started + timedelta(minutes=5), host="bench", pid=1000 + run_id, zoo_version="0.1.0",
                torch_version="2.4.0", torchvision_version="0.19.0", python_version="3.11.7", device="cpu",
                dataset_path="/data/pets", dataset_fingerprint="fp-data", split_fingerprint="fp-split",
                classes=CLASSES, train_size=800, val_size=100, test_size=100, best_epoch=epochs - 3,
                epochs_run=epochs, stop_reason="max_epochs" if status == "completed" else "error",
                checkpoint=None, error="boom" if status == "failed" else None, confusion=None,
            ))
            lr = rng.choice([0.1, 0.01, 0.001])
            params += [{"run_id": run_id, "key": k, "value": v} for k, v in (
                ("lr", str(lr)), ("epochs", str(epochs)), ("batch_size", "32"), ("optimizer", '"adamw"'),
                ("image_size", "64"), ("seed", str(run_id % 5)), ("pretrained", "false"), ("patience", "5"))]
            tags.append({"run_id": run_id, "key": "sweep", "value": f"s{run_id % 20}"})
            quality = rng.random()
            for epoch in range(1, epochs + 1):
                loss = 2.0 / epoch + quality
                for key, value in zip(HISTORY_KEYS, (loss, 1 - loss / 4, loss * 1.1, 1 - loss / 3, lr, 1.5, 500.0)):
                    history.append({"run_id": run_id, "epoch": epoch, "key": key, "value": value})
            if status == "completed":
                acc = 0.95 - quality / 2
                for key, value in (("test_accuracy", acc), ("test_loss", quality), ("test_f1", acc - 0.01),
                                   ("test_precision", acc), ("test_recall", acc - 0.02)):
                    metrics.append({"run_id": run_id, "key": key, "value": value})
                for cls in CLASSES:
                    for key in ("precision", "recall", "f1"):
                        metrics.append({"run_id": run_id, "key": f"test_{key}/{cls}", "value": acc})
        for table, rows in ((schema.runs, run_rows), (schema.params, params), (schema.tags, tags),
                            (schema.history, history), (schema.metrics, metrics)):
            for i in range(0, len(rows), 50_000):
                conn.execute(insert(table), rows[i:i + 50_000])


def measure(commands: dict[str, list[str]], repeat: int, env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Median wall and CPU (user+sys) seconds of each command, run round-robin so all see the same machine load."""
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            wall[name].append(time.perf_counter() - began)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in commands}


def registry_options(parser: argparse.ArgumentParser, repeat: int) -> None:
    """The options every registry bench shares: its size, how often each command is timed, where it is kept."""
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--keep", type=Path, help="Write the registry here (reused when it exists).")


def prepared_registry(args: argparse.Namespace) -> tuple[Path, tempfile.TemporaryDirectory]:
    """The registry to time: ``--keep FILE`` when it exists, else filled now (in a temporary folder without
    ``--keep``); also returns the temporary folder, which lives as long as the caller holds it."""
    folder = tempfile.TemporaryDirectory()
    path = args.keep or Path(folder.name) / "registry.db"
    if not path.exists():
        began = time.perf_counter()
        fill(path, args.runs, args.epochs)
        print(f"filled {path}: {args.runs} runs x {args.epochs} epochs x {len(HISTORY_KEYS)} keys "
              f"in {time.perf_counter() - began:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
    return path, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    registry_options(parser, repeat=7)
    parser.add_argument("--no-bytecode-cache", dest="bytecode_cache", action="store_false",
                        help="Keep PYTHONDONTWRITEBYTECODE from the environment (every module compiled each run).")
    args = parser.parse_args()

    path, folder = prepared_registry(args)
    env = dict(os.environ, COLUMNS="160")
    env.pop("ZOO_DISABLE_PLUGIN_AUTOLOAD", None)
    if args.bytecode_cache:
        # As on a user's machine, where Python caches compiled modules (this sandbox sets
        # PYTHONDONTWRITEBYTECODE=1, which recompiles every zoo module on every command). The cache goes to a
        # temporary folder, not into the source tree; the warm-up runs below fill it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder.name) / "pycache")
    print(f"bytecode cache: {'on' if args.bytecode_cache else 'off (PYTHONDONTWRITEBYTECODE as inherited)'}")
    zoo = [sys.executable, "-m", "zoo", "--registry", str(path)]
    for warm in ([*zoo, "list-runs"], [*zoo, "compare"], [sys.executable, "-c", "import torch"]):
        subprocess.run(warm, capture_output=True, env=env)  # OS file cache (and bytecode cache) warm

    timings = measure({
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "zoo list-runs": [*zoo, "list-runs"],
        "zoo compare --metric accuracy": [*zoo, "compare", "--metric", "accuracy"],
        "python -c 'pass'": [sys.executable, "-c", "pass"],
    }, args.repeat, env)
    torch_wall, torch_cpu = timings.pop("python -c 'import torch'")
    print(f"load average after timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall >> cpu: shared CPU)")
    print(f"{'python -c import torch':<32} {torch_wall:.3f}s wall  {torch_cpu:.3f}s cpu  (median of {args.repeat})")
    worst = 0.0
    for name, (seconds, cpu_s) in timings.items():
        ratio = seconds / torch_wall
        if name.startswith("zoo"):
            worst = max(worst, ratio)
        print(f"{name:<32} {seconds:.3f}s wall  {cpu_s:.3f}s cpu  ratio {ratio:.3f} (cpu ratio {cpu_s / torch_cpu:.3f})")
    print("PASS" if worst <= 0.25 else "FAIL", f"worst wall ratio {worst:.3f} (target <= 0.25)")
    folder.cleanup()


if __name__ == "__main__":
    main()
