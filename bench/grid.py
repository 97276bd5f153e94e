"""A grid's overhead: wall time of a 6-run grid through the training service vs. the work it cannot avoid.

    python bench/grid.py [--epochs 2] [--size 32]

Trains tinycnn on the generated ``demo`` set with lr x batch size = 3 x 2 runs, all in one Session (as
``zoo train tinycnn --lr a,b,c --batch-size x,y`` does), into a fresh registry in a temporary folder. Prints

    ratio = wall time of plan + session / (sum of each run's build+train+test time + one decode)

Target (issue "typed specs and training service"): <= 1.10. What the ratio charges to the grid: planning (scan,
checks), registry writes outside the runs, the split per run, and everything between runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ZOO_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        from zoo.data import load_images
        from zoo.spec import build_specs
        from zoo.store import Registry
        from zoo.training import Session, make_plan

        decode_s = []

        def timed_decode(*a, **k):
            started = time.perf_counter()
            images = load_images(*a, **k)
            decode_s.append(time.perf_counter() - started)
            return images

        specs = build_specs(models=["tinycnn"], axes={"lr": [0.1, 0.05, 0.01], "batch_size": [32, 64]},
                            base={"data": "demo", "epochs": args.epochs, "image_size": args.size, "patience": 99})
        from zoo.data import resolve_data

        resolve_data("demo")  # generate the dataset first (once per cache): not part of a grid's cost
        started = time.perf_counter()
        with Registry.open(Path(tmp) / "registry.db") as reg:
            plan = make_plan(specs, reg)
            session = Session(plan, reg, decode=timed_decode)
            result = session.run()
        wall = time.perf_counter() - started
        work = sum(o.seconds for o in result.outcomes) + sum(decode_s)
        print(f"{len(result.outcomes)} runs, {args.epochs} epoch(s) at {args.size} px; decodes {session.decodes} "
              f"({sum(decode_s):.2f} s); runs {sum(o.seconds for o in result.outcomes):.2f} s; wall {wall:.2f} s")
        print(f"ratio {wall / work:.3f} (target <= 1.10)")
        return 0 if all(o.status == "completed" for o in result.outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
