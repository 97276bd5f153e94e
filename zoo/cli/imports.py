"""zoo import: runs recorded elsewhere, from a JSON Lines file or an MLflow tracking store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from zoo.cli.app import app, open_registry
from zoo.errors import ZooError


@app.command("import")
def import_runs(
    file: Optional[Path] = typer.Argument(None, help="A .jsonl file: one run a line (README: Recording runs)."),
    from_mlflow: Optional[str] = typer.Option(None, "--from-mlflow", metavar="URI",
                                              help="An MLflow tracking URI (sqlite:///mlflow.db, ./mlruns, http://...)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", metavar="NAME",
                                             help="With --from-mlflow: only this experiment (default: all)."),
) -> None:
    """Import finished runs, params, metrics, history and tags (runs imported before, same uuid, are skipped)."""
    import time

    from zoo.store import bulk

    if (file is None) == (from_mlflow is None):
        raise ZooError("Give a .jsonl file (zoo import runs.jsonl) or an MLflow store (zoo import --from-mlflow URI).")
    if experiment and not from_mlflow:
        raise ZooError("--experiment goes with --from-mlflow.")
    began = time.perf_counter()
    if file is not None:
        if not file.is_file():
            raise ZooError(f"No file {file}: give a .jsonl file with one run a line.")
        records = list(bulk.read_jsonl(file))
    else:
        from zoo.interop import mlflow_import

        records = list(mlflow_import.records(from_mlflow, experiment))
    with open_registry() as reg:
        done = bulk.import_runs(reg, records)
    seconds = time.perf_counter() - began
    count = len(done.ids)
    shown = f" (runs {done.ids[0]}-{done.ids[-1]})" if count > 1 else f" (run {done.ids[0]})" if count else ""
    typer.echo(f"Imported {count} run{'s' if count != 1 else ''}{shown} in {seconds:.1f} s"
               + (f"; {done.skipped} already in the registry, skipped." if done.skipped else "."))
