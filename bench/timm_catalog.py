"""What the timm plugin adds to `zoo models`: the same commands with the plugin and without it
(ZOO_BLOCK_PLUGINS=timm_models), in fresh interpreters, round-robin so both see the same machine load.

    python bench/timm_catalog.py [--runs 7]

Prints the median wall time of each command with and without the plugin, the difference (target: under 0.3 s) and
the ratio, then, once each, what the plugin avoids: `import timm` (which imports torch), and making the catalog
in a child process (what a timm version other than the shipped catalog's costs on its first listing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "zoo models --format json": ["models", "--format", "json"],
    "zoo models (table)": ["models"],
    "zoo models 'resnet*'": ["models", "resnet*"],
    "zoo --help": ["--help"],
}


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="zoo-bench-timm-")
    base_env = {**os.environ, "ZOO_CACHE": cache, "COLUMNS": "80"}
    envs = {"with timm": base_env, "without": {**base_env, "ZOO_BLOCK_PLUGINS": "timm_models"}}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for label, argv in COMMANDS.items():
            for which, env in envs.items():
                times.setdefault((label, which), []).append(seconds([sys.executable, "-m", "zoo", *argv], env))
    print(f"{'command':28} {'with timm':>10} {'without':>9} {'added s':>8} {'ratio':>6}")
    for label in COMMANDS:
        with_timm = statistics.median(times[(label, "with timm")])
        without = statistics.median(times[(label, "without")])
        print(f"{label:28} {with_timm:10.3f} {without:9.3f} {with_timm - without:8.3f} {with_timm / without:6.2f}")
    once = {
        "import timm (imports torch)": [sys.executable, "-c", "import timm"],
        "catalog made in a child": [sys.executable, "-m", "zoo_builtin_plugins.timm_models", "catalog",
                                    os.path.join(cache, "catalog.json")],
    }
    for label, cmd in once.items():
        print(f"{label:28} {seconds(cmd, base_env):10.3f} (once)")


if __name__ == "__main__":
    main()
