"""What every writer of a run row shares (the registry's lifecycle, the queue, bulk import): a new run id, the
versions recorded with a run, optional text and finite numbers as the columns take them. Imports no torch."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from sqlalchemy import Connection, func, insert, select, update


def next_run_id(conn: Connection, taken: Optional[Callable[[int], bool]] = None) -> int:
    """A run id never issued before in this registry (call inside the write transaction that inserts the run).

    The counter row is updated first, which takes its write lock on any database; the highest id present covers
    runs inserted without the counter (bulk loads, older zoo versions); ids for which ``taken`` says a trace is
    left (an artifacts folder) are skipped.
    """
    from zoo.store import schema  # the declarative schema: writers only (read commands skip sqlalchemy.orm)

    c, runs = schema.counters, schema.runs
    conn.execute(update(c).where(c.c.name == "runs").values(value=c.c.value + 1))
    issued = conn.scalar(select(c.c.value).where(c.c.name == "runs"))
    highest = conn.scalar(select(func.max(runs.c.id))) or 0
    run_id = max(issued or 0, highest + 1)
    while taken is not None and taken(run_id):
        run_id += 1
    if issued is None:
        conn.execute(insert(c).values(name="runs", value=run_id))
    elif issued != run_id:
        conn.execute(update(c).where(c.c.name == "runs").values(value=run_id))
    return run_id


def started_columns(dataset: Optional[dict]) -> dict[str, Any]:
    """What a run's row records when its training starts, beside its own identity: the dataset it trains on (a
    ``DatasetRecord.as_row()``; empty when unknown) and the versions (``start_run`` and a claimed queued run)."""
    dataset = dataset or {}
    return dict(
        dataset_path=opt_str(dataset.get("path")), dataset_fingerprint=dataset.get("fingerprint"),
        split_fingerprint=dataset.get("split_fingerprint"),
        classes=list(dataset["classes"]) if dataset.get("classes") is not None else None,
        train_size=dataset.get("train_size"), val_size=dataset.get("val_size"), test_size=dataset.get("test_size"),
        **versions(),
    )


def versions() -> dict[str, Optional[str]]:
    """zoo's, Python's, torch's and torchvision's versions (None when not installed), as a run row records them;
    read from package metadata, so torch is not imported."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from zoo import __version__

    found: dict[str, Optional[str]] = {"zoo_version": __version__, "python_version": platform.python_version()}
    for dist in ("torch", "torchvision"):
        try:
            found[f"{dist}_version"] = version(dist)
        except PackageNotFoundError:
            found[f"{dist}_version"] = None
    return found


def opt_str(value: Any) -> Optional[str]:
    """A path or name as a text column takes it; None stays None."""
    return None if value is None else str(value)


def finite(value: Any) -> Optional[float]:
    """A metric value as recorded: a float, or None for a missing, NaN or infinite one."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
