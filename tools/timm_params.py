"""Regenerate plugins/timm_params.json: the parameter count (at 1000 classes) of every timm architecture, counted
on torch's meta device (no memory, no weights), for the timm version installed. The timm plugin reads it so that
`zoo models --max-params` and `--sort params` need not build a thousand models; architectures missing from it
(a newer timm) are counted once on demand and cached under $ZOO_CACHE.

    python tools/timm_params.py            # about 30 min on one core; writes and prints progress as it goes
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "plugins" / "timm_params.json"


def main() -> None:
    import timm
    import torch

    counts: dict[str, int] = {}
    names = timm.list_models()
    started = time.perf_counter()
    for i, name in enumerate(names, 1):
        try:
            with torch.device("meta"):
                model = timm.create_model(name)
            counts[name] = sum(p.numel() for p in model.parameters())
        except Exception as exc:  # left out: counted on demand by the plugin
            print(f"{name}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
        if i % 25 == 0 or i == len(names):  # written as it goes: an interrupted run still leaves its counts
            OUT.write_text(json.dumps({"timm": version("timm"), "params": counts}, indent=0, sort_keys=True) + "\n")
            print(f"{i}/{len(names)} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(f"{len(counts)} counts written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
