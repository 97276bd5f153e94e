"""How long `zoo models` takes, against what it would cost if listing imported torchvision.

    python bench/bench_catalog.py [--runs 5]

Each command runs in a fresh interpreter (as a user types it); the median wall time of --runs runs is printed,
with the ratio listing / baseline. Baselines, measured in the same process: a bare interpreter, and
`import torchvision.models` (what listing costs if plugin modules imported torch).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python (bare interpreter)": [sys.executable, "-c", "pass"],
    "import torchvision.models": [sys.executable, "-c", "import torchvision.models"],
    "zoo models --format json": [sys.executable, "-m", "zoo", "models", "--format", "json"],
    "zoo models 'resnet*'": [sys.executable, "-m", "zoo", "models", "resnet*"],
    "zoo plugins": [sys.executable, "-m", "zoo", "plugins"],
}


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {label: median_seconds(cmd, args.runs) for label, cmd in COMMANDS.items()}
    torch_import = results["import torchvision.models"]
    print(f"{'command':32} {'median s':>9} {'/ import torchvision':>21}")
    for label, seconds in results.items():
        print(f"{label:32} {seconds:9.3f} {seconds / torch_import:21.2f}")


if __name__ == "__main__":
    main()
