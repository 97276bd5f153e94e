"""Commands that use a trained run: evaluate, predict, export. torch is imported only when one of them runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from zoo.cli.app import app, check_choice, open_registry
from zoo.errors import console, print_error, print_warning


def predictions_table(results: list[dict], title: str, width: Optional[int] = None):
    """One row per file with its top-k classes side by side; when that is wider than ``width`` (predict -k 10 on
    80 columns), one row per class instead (file, rank, class, probability), so no cell is cut."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    k = max((len(r.get("predictions", [])) for r in results), default=0)
    cells = [[f"{p['class']} {p['probability']:.1%}" for p in r.get("predictions", [])] for r in results]
    widths = [max([cell_len(f"#{i + 1}")] + [cell_len(row[i]) for row in cells if i < len(row)]) for i in range(k)]
    files = max([cell_len("file")] + [cell_len(r["file"]) for r in results])
    wide = files + sum(widths) + 3 * (k + 1) + 1
    table = Table(title=title, title_justify="left")
    if width is None or wide <= width or k <= 1:
        table.add_column("file", overflow="fold")
        for i in range(k):
            table.add_column(f"#{i + 1}", no_wrap=True)
        for r, row in zip(results, cells):
            if "error" in r:
                table.add_row(r["file"], Text(f"unreadable: {r['error']}", style="red"))
            else:
                table.add_row(r["file"], *row)
        return table
    table.add_column("file", overflow="fold")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("class", overflow="fold")
    table.add_column("probability", justify="right", no_wrap=True)
    for r in results:
        if "error" in r:
            table.add_row(r["file"], "", Text(f"unreadable: {r['error']}", style="red"), "", end_section=True)
            continue
        predictions = r["predictions"]
        for i, p in enumerate(predictions):
            table.add_row(r["file"] if i == 0 else "", str(i + 1), p["class"], f"{p['probability']:.1%}",
                          end_section=i == len(predictions) - 1)
    return table


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="Run id or name."),
    data: Optional[str] = typer.Option(None, "--data", help="Image folder or dataset name with the run's classes "
                                       "(default: the run's own test split)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=1_000_000),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", show_default=False,
                                       help="Average each image's probabilities with its mirror image's "
                                            "(default: as the run was tested, --tta or not)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Evaluate a run's best checkpoint and record the result as a new evaluation of that run."""
    fmt = check_choice("--format", fmt, ("table", "json"))
    from zoo.inference import evaluate_run

    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        result = evaluate_run(view, data, device=device, batch_size=batch_size, warn=print_warning, tta=tta)
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
    rows = [row for row in per_class(result.classes, result.metrics, result.confusion) if row["support"]]
    out.print(per_class_table(rows, f"Per class ({result.dataset}, {int(result.metrics['images'])} images)"))
    out.print(confusion_table(result.classes, result.confusion))


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run id or name."),
    images: List[str] = typer.Argument(..., help="Image files or folders."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many classes to show per image."),
    device: str = typer.Option("cpu", "--device", help="cpu (the same numbers on every machine and in exported "
                                                        "files), auto, cuda, cuda:N or mps."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", show_default=False,
                                       help="Average each image's probabilities with its mirror image's "
                                            "(default: as the run was tested, --tta or not)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Top-k classes with probabilities for each image, from a run's best checkpoint."""
    fmt = check_choice("--format", fmt, ("table", "json"))
    from zoo.inference import predict as run_predict

    with open_registry(readonly=True, create=False) as reg:
        view = reg.get_run(run)
    results = run_predict(view, images, top_k=top_k, device=device, tta=tta)
    failed = [r for r in results if "error" in r]
    if fmt == "json":
        typer.echo(json.dumps(results, indent=2))
    else:
        out = console()
        out.print(predictions_table(results, f"Run {view.id} ({view.model}) predictions", width=out.width))
    for r in failed:
        print_warning(f"Cannot read '{r['file']}': {r['error']}")
    if failed and len(failed) == len(results):
        print_error(f"None of the {len(results)} file(s) could be read as an image; nothing was predicted.")
        raise typer.Exit(1)


@app.command()
def export(
    run: str = typer.Argument(..., help="Run id or name.", metavar="RUN"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                      help="pt2 (torch.export, the default), onnx or torchscript; "
                                           "default: the one --output's suffix names (.onnx, .pt2), else pt2."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE",
                                help="File to write (a format suffix is added when it has none)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files that already exist."),
) -> None:
    """Write a run's best model as a file that loads without zoo, described in NAME.json beside it.

    Prints three lines of Python that load the file and predict as zoo predict does."""
    from zoo.inference import export as run_export, export_format

    fmt = export_format(fmt, output)
    with open_registry(readonly=True, create=False) as reg:
        view = reg.get_run(run)
    info = run_export(view, fmt, output, force=force)
    size = info["image_size"]
    data = f" and its weights {info['data_file']}" if info.get("data_file") else ""
    typer.echo(f"Wrote {info['file']} ({fmt}, {_size(info['bytes'])}){data}; described in {info['sidecar']}.")
    typer.echo(f"Input: float32 [N, 3, {size}, {size}] RGB in [0, 1], the shorter side resized to "
               f"{info['preprocessing']['resize_shorter_side']} and centre-cropped (the model normalises); "
               f"classes: {', '.join(info['classes'])}.")
    typer.echo(f"Load it and predict (the probabilities of 'zoo predict {view.id} photo.jpg'):")
    typer.echo("")
    for line in info["example"]:
        typer.echo(line)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
