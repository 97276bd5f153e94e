"""--where filter + sort on a big registry against today's `zoo compare`, and `zoo import` runs per second.

Fills a registry with bench/registry_scale.py's generator (10,000 runs x 30 epochs), then times, as fresh
subprocesses (median of several, round-robin): `zoo compare` (the baseline: rank every run by accuracy), the same
with --where filters (a metric, params, a tag, a glob), and `zoo list-runs --where`; prints each as a ratio to the
baseline (target <= 1.0). Then writes RUNS records (12 params, 30 epochs of 4 history keys, 6 test metrics, 2 tags,
the shape of issue 22's MLflow comparison) to a .jsonl file and times `zoo import` into a fresh registry.

    python bench/tracking_scale.py [--runs 10000] [--epochs 30] [--repeat 5] [--import-runs 5000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from registry_scale import measure, prepared_registry, registry_options  # noqa: E402

FILTERS = {
    "compare --where metric": ["compare", "--where", "accuracy > 0.9"],
    "compare --where params+glob": ["compare", "--where", "lr <= 0.01 and model glob 'resnet*' and status != failed"],
    "compare --where tag or per-class": ["compare", "--where", "tag.sweep = s3 or test_f1/cat > 0.94"],
    "list-runs --where metric": ["list-runs", "--where", "accuracy > 0.9 and lr = 0.01"],
}


def jsonl(path: Path, runs: int, epochs: int) -> None:
    with open(path, "w") as out:
        for i in range(runs):
            params = {f"p{k}": k * 0.5 for k in range(10)} | {"lr": 0.01 * (1 + i % 3), "model_size": i % 7}
            history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 1 - 1 / (e + 1),
                        "val_acc": 1 - 1.2 / (e + 1)} for e in range(1, epochs + 1)]
            metrics = {"test_accuracy": 0.5 + (i % 50) / 100, "test_f1": 0.5, "test_precision": 0.5,
                       "test_recall": 0.5, "test_loss": 0.7, "test_f1/cat": 0.4}
            out.write(json.dumps({"model": f"net{i % 10}", "params": params, "history": history, "metrics": metrics,
                                  "tags": {"owner": "bench", "sweep": f"s{i % 20}"}}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    registry_options(parser, repeat=5)
    parser.add_argument("--import-runs", type=int, default=5_000)
    args = parser.parse_args()

    path, folder = prepared_registry(args)
    env = dict(os.environ, COLUMNS="160")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(folder.name) / "pycache")
    zoo = [sys.executable, "-m", "zoo", "--registry", str(path)]
    commands = {"zoo compare (baseline)": [*zoo, "compare"], **{f"zoo {k}": [*zoo, *v] for k, v in FILTERS.items()}}
    for command in commands.values():
        subprocess.run(command, capture_output=True, env=env)  # caches warm
    timings = measure(commands, args.repeat, env)
    base, _ = timings["zoo compare (baseline)"]
    worst = 0.0
    for name, (seconds, cpu) in timings.items():
        ratio = seconds / base
        worst = max(worst, ratio)
        print(f"{name:<40} {seconds:.3f}s wall  {cpu:.3f}s cpu  ratio {ratio:.2f} (median of {args.repeat})")
    print("PASS" if worst <= 1.1 else "FAIL", f"worst ratio to compare {worst:.2f} (target <= 1.0, 10% noise)")

    source = Path(folder.name) / "runs.jsonl"
    jsonl(source, args.import_runs, args.epochs)
    target = Path(folder.name) / "imported.db"
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "zoo", "--registry", str(target), "import", str(source)],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(done.stderr)
    print(f"zoo import {args.import_runs} runs ({source.stat().st_size / 1e6:.0f} MB jsonl, {args.epochs} epochs x 4 "
          f"keys each): {seconds:.1f}s, {args.import_runs / seconds:.0f} runs/s  [{done.stdout.strip()}]")
    folder.cleanup()


if __name__ == "__main__":
    main()
