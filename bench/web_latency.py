"""How fast `zoo ui` answers on a big registry: the runs page of 10,000 runs must answer in <= 0.3 s.

Fills a registry like bench/registry_scale.py (10,000 runs x 30 epochs, bulk inserts), starts the real command
(`zoo ui` in a subprocess), waits until it answers, then times each page: the first request after start-up and
the median and worst of ``--repeat`` more, each a fresh HTTP connection. Prints seconds and the ratio to 0.3 s.

    python bench/web_latency.py [--runs 10000] [--epochs 30] [--repeat 9] [--keep registry.db]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_scale import prepared_registry, registry_options  # noqa: E402

BUDGET_S = 0.3
PAGES = {
    "runs page (newest first)": "/",
    "sorted by accuracy": "/?sort=test_accuracy&order=desc",
    "filtered + sorted": "/?model=resnet*&status=completed&sort=test_f1&order=asc",
    "tag filter": "/?tag=sweep%3Ds7",
    "page 150 of 200": "/?page=150",
    "200 per page": "/?per_page=200&sort=test_loss",
}
OTHER_PAGES = {
    "one run": "/runs/5000",
    "compare 3 runs": "/compare?run=10&run=20&run=30",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    registry_options(parser, repeat=9)
    args = parser.parse_args()

    path, folder = prepared_registry(args)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ZOO_REGISTRY=str(path))
    began = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "zoo", "ui", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"zoo ui exited:\n{server.stderr.read()}")
                if time.perf_counter() - began > 60:
                    raise SystemExit("zoo ui did not start within 60 s")
                time.sleep(0.01)
        print(f"zoo ui listening after {time.perf_counter() - began:.2f}s")
        print(f"{'page':<26} {'first':>7} {'median':>7} {'worst':>7}  median / {BUDGET_S} s")
        worst_ratio = 0.0
        for name, page in {**PAGES, **OTHER_PAGES}.items():
            first = fetch(base + page)
            times = [fetch(base + page) for _ in range(args.repeat)]
            median = statistics.median(times)
            ratio = median / BUDGET_S
            if name in PAGES:
                worst_ratio = max(worst_ratio, ratio, first / BUDGET_S)
            print(f"{name:<26} {first:7.3f} {median:7.3f} {max(times):7.3f}  {ratio:.2f}")
        print(f"runs page, worst first or median time of its variants: {worst_ratio:.2f} x the {BUDGET_S} s budget "
              f"({'within' if worst_ratio <= 1 else 'OVER'})")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
