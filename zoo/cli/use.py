"""Commands that use a trained run: evaluate, predict, export. torch is imported only when one of them runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from zoo.cli.app import app, check_choice, open_registry
from zoo.errors import console, print_error, print_warning


def predictions_table(results: list[dict], title: str):
    """One row per file: its top-k classes with probabilities, or why it could not be read."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    table.add_column("file")
    for i in range(max((len(r.get("predictions", [])) for r in results), default=0)):
        table.add_column(f"#{i + 1}")
    for r in results:
        if "error" in r:
            table.add_row(r["file"], Text(f"unreadable: {r['error']}", style="red"))
        else:
            table.add_row(r["file"], *(f"{p['class']} {p['probability']:.1%}" for p in r["predictions"]))
    return table


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="Run id."),
    data: Optional[str] = typer.Option(None, "--data", help="Image folder or dataset name with the run's classes "
                                       "(default: the run's own test split)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Evaluate a run's best checkpoint and record the result as a new evaluation of that run."""
    fmt = check_choice("--format", fmt, ("table", "json"))
    from zoo.inference import evaluate_run

    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        result = evaluate_run(view, data, device=device, batch_size=batch_size, warn=print_warning)
        eval_id = reg.add_evaluation(view.id, result.metrics, dataset=result.dataset,
                                     dataset_fingerprint=result.fingerprint, confusion=result.confusion,
                                     classes=result.classes)
    if fmt == "json":
        typer.echo(json.dumps({"run": view.id, "evaluation": eval_id, "dataset": result.dataset,
                               "dataset_fingerprint": result.fingerprint, "metrics": result.metrics,
                               "confusion": result.confusion, "classes": result.classes}, indent=2))
        return
    from zoo.render import confusion_table, per_class, per_class_table

    out = console()
    out.print(f"Run {view.id} ({view.model}) on {result.dataset}, {int(result.metrics['images'])} images: accuracy {result.metrics['test_accuracy']:.4f}, "
                  f"loss {result.metrics['test_loss']:.4f}, macro F1 {result.metrics['test_f1']:.4f} "
                  f"(evaluation {eval_id})")
    out.print(per_class_table(per_class(result.classes, result.metrics, result.confusion)))
    out.print(confusion_table(result.classes, result.confusion))


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run id."),
    images: List[str] = typer.Argument(..., help="Image files or folders."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many classes to show per image."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Top-k classes with probabilities for each image, from a run's best checkpoint."""
    fmt = check_choice("--format", fmt, ("table", "json"))
    from zoo.inference import predict as run_predict

    with open_registry(readonly=True, create=False) as reg:
        view = reg.get_run(run)
    results = run_predict(view, images, top_k=top_k)
    failed = [r for r in results if "error" in r]
    if fmt == "json":
        typer.echo(json.dumps(results, indent=2))
    else:
        console().print(predictions_table(results, f"Run {view.id} ({view.model}) predictions"))
    for r in failed:
        print_warning(f"Cannot read '{r['file']}': {r['error']}")
    if failed and len(failed) == len(results):
        print_error(f"None of the {len(results)} file(s) could be read as an image; nothing was predicted.")
        raise typer.Exit(1)


@app.command()
def export(
    run: str = typer.Argument(..., help="Run id."),
    fmt: str = typer.Option("torchscript", "--format", "-f", help="torchscript or onnx."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write."),
) -> None:
    """Write a run's best model as a file that loads and runs without zoo (TorchScript or ONNX)."""
    from zoo.inference import export as run_export

    with open_registry(readonly=True, create=False) as reg:
        view = reg.get_run(run)
    info = run_export(view, fmt, output)
    console().print(f"Wrote {info['file']} ({fmt}): input {info['input']}; image size {info['image_size']}; "
                     f"classes {', '.join(info['classes'])}.")
