"""Regenerate plugins/timm_catalog.json.gz: what the timm plugin lists (names, pretrained configurations, tags)
for the timm version installed, so that listing needs neither timm nor torch imported. Another timm version
installed than the one the file names: the plugin makes its own catalog under $ZOO_CACHE/timm once.

    python tools/timm_catalog.py
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.timm_models import SHIPPED_CATALOG, make_catalog  # noqa: E402


def main() -> None:
    catalog = make_catalog()
    with gzip.GzipFile(SHIPPED_CATALOG, "wb", mtime=0) as handle:  # mtime 0: the same timm, the same bytes
        handle.write(json.dumps(catalog, sort_keys=True, separators=(",", ":")).encode())
    print(f"timm {catalog['timm']}: {len(catalog['models'])} models -> {SHIPPED_CATALOG}", file=sys.stderr)


if __name__ == "__main__":
    main()
