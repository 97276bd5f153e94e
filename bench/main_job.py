"""How long the README's main job takes, as a new user runs it (fresh registry, fresh dataset cache).

    python bench/main_job.py [--cache DIR]

Runs the README's `zoo train` command (read from README.md, so the two cannot drift apart) in a temporary folder
and prints the wall time of the whole command, the time spent in the epochs, the rest (start-up, generating
`demo` on first use, the test pass), its test accuracy and the load average. Without `--cache` the dataset cache is
fresh, so the figure includes generating `demo` as a first command does; `--cache DIR` reuses one (a second run).
Only a quiet machine's figure means anything: the script prints the load average so a loaded run is recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_job() -> list[str]:
    """The `zoo train ...` part of the README's install line."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install -e"))
    return shlex.split(next(part for part in line.split("&&") if part.strip().startswith("zoo train")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="a ZOO_CACHE that already holds demo (default: a fresh one)")
    args = parser.parse_args()
    job = readme_job()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ZOO_REGISTRY=str(Path(tmp) / "registry.db"), ZOO_CACHE=args.cache or tmp,
                   ZOO_DISABLE_PLUGIN_AUTOLOAD="1", COLUMNS="200")
        cmd = [sys.executable, "-m", "zoo", *job[1:]]
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
    print(f"command: {shlex.join(job)}  (load average at start {load:.1f}, {os.cpu_count()} CPUs, "
          f"{'cached' if args.cache else 'fresh'} dataset cache)")
    print(f"wall {wall:.1f} s: {len(epochs)} epochs {sum(epochs):.1f} s (mean {sum(epochs) / len(epochs):.2f} s), "
          f"the rest {wall - sum(epochs):.1f} s; test accuracy {metrics.get('test_accuracy'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
