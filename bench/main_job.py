"""How long the README's main job takes, as a new user runs it (fresh registry, fresh dataset cache).

    python bench/main_job.py [--epochs 8] [--keep-cache]

Runs `zoo train tinycnn --data demo --epochs N` in a temporary folder and prints the wall time of the whole
command, its parts (generating demo, the epochs), its test accuracy, and the ratio wall time / mean epoch time.
The epoch is the baseline, measured in the same command: on a machine loaded by other work both stretch alike, so
the ratio times a quiet machine's epoch time (BENCHMARKS.md: 1.7 s on 2 cores) estimates the quiet wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET_EPOCH_S = 1.7  # tinycnn on demo, one epoch at 64 px, quiet 2-core VM (BENCHMARKS.md, "Demo job")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--cache", help="a ZOO_CACHE that already holds demo (default: a fresh one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ZOO_REGISTRY=str(Path(tmp) / "registry.db"), ZOO_CACHE=args.cache or tmp,
                   ZOO_DISABLE_PLUGIN_AUTOLOAD="1", COLUMNS="200")
        cmd = [sys.executable, "-m", "zoo", "train", "tinycnn", "--data", "demo", "--epochs", str(args.epochs)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - start
        if done.returncode:
            print(done.stdout + done.stderr)
            return 1
        epochs = [float(s) for s in re.findall(r"img/s\s+([\d.]+)s", done.stdout)]
        shown = subprocess.run([sys.executable, "-m", "zoo", "show", "1", "--format", "json"], capture_output=True,
                               text=True, env=env, cwd=tmp)
        metrics = json.loads(shown.stdout)["metrics"]
    mean = sum(epochs) / len(epochs)
    ratio = wall / mean
    print(f"command: {' '.join(cmd[3:])}  (load average at start {load:.1f}, {os.cpu_count()} CPUs)")
    print(f"wall {wall:.1f} s; {len(epochs)} epochs, mean {mean:.2f} s, {sum(epochs):.1f} s in all; "
          f"test accuracy {metrics.get('test_accuracy'):.4f}")
    print(f"ratio wall / epoch {ratio:.1f}: on a quiet machine ({QUIET_EPOCH_S} s an epoch) about "
          f"{ratio * QUIET_EPOCH_S:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
