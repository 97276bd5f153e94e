"""``zoo lr-find MODEL --data D``: the learning-rate range test. Records nothing in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from zoo.cli.app import app
from zoo.errors import ZooError, console


@app.command("lr-find")
def lr_find(
    model: str = typer.Argument(..., metavar="MODEL", help="Architecture to probe."),
    data: str = typer.Option(..., "--data", "-d", metavar="PATH|NAME", help="Image folder or dataset name."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=1, metavar="PX", show_default=False,
                                             help="Square input size (default: the model's own)."),
    batch_size: int = typer.Option(32, "--batch-size", min=2, max=1_000_000, metavar="N"),
    recipe: str = typer.Option("auto", "--recipe", metavar="NAME",
                               help="Optimizer and loss of this recipe (auto, seed, scratch)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", metavar="NAME", show_default=False,
                                            help="sgd, nesterov or adamw (default: the recipe's)."),
    pretrained: bool = typer.Option(False, "--pretrained/--no-pretrained", help="Start from the plugin's weights."),
    start: float = typer.Option(1e-6, "--start", min=0.0, max=10.0, metavar="LR", help="First learning rate."),
    end: float = typer.Option(10.0, "--end", min=0.0, max=1000.0, metavar="LR", help="Last learning rate."),
    steps: int = typer.Option(100, "--steps", min=10, max=100_000, metavar="N", help="Optimizer steps (one per batch)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE.png", show_default=False,
                                          help="Save the loss-vs-lr plot (needs matplotlib)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
) -> None:
    """Train for a few batches with a growing learning rate and suggest one: a tenth of the lr where the smoothed
    loss was lowest. Records nothing."""
    if not 0 < start < end:
        raise ZooError(f"--start {start:g} and --end {end:g}: need 0 < start < end, e.g. --start 1e-6 --end 10.")
    from zoo import spec as specs
    from zoo.data import augment_for, load_images, make_pipeline, resolve_data, split_samples
    from zoo.engine import build_model, lr_range_test, suggest_lr
    from zoo.training import check_specs

    run_spec = specs.RunSpec(model, data, image_size=image_size, batch_size=batch_size, pretrained=pretrained,
                             recipe=specs.convert("recipe", recipe), device=device,
                             optimizer=specs.convert("optimizer", optimizer) if optimizer else None)
    (planned,) = check_specs([run_spec]).runs
    spec, resolved = planned.spec, planned.resolved
    root, _ = resolve_data(spec.data)
    images = load_images(root, image_sizes=[resolved.image_size], split=planned.ratios)
    split = split_samples(images, planned.ratios, spec.split_seed)
    pipeline = make_pipeline(images, split, image_size=resolved.image_size, batch_size=spec.batch_size,
                             device=resolved.device, augment=augment_for(spec.augment, spec.hflip),
                             prep=planned.info.preprocess)
    net = build_model(planned.info, len(images.classes), spec)
    points = lr_range_test(net, pipeline, spec, resolved, start=start, end=end, steps=steps)
    suggestion = suggest_lr(points)
    out = console()
    out.print(f"{model}: {len(points)} steps from lr {start:g} to {points[-1][0]:g} ({spec.optimizer}, recipe "
              f"{spec.recipe}); loss {points[0][1]:.4f} -> lowest {min(p[1] for p in points):.4f}" if points
              else f"{model}: the loss diverged at once; try a lower --start.")
    if suggestion is None:
        raise ZooError("Too few steps before the loss diverged to suggest a learning rate; try a lower --start or "
                       "more --steps.")
    out.print(f"Suggested lr: {suggestion:.3g}  (zoo train {model} --data {data} --lr {suggestion:.3g})")
    if output is not None:
        _plot(points, suggestion, output)
        out.print(f"Plot: {output}")


def _plot(points: list[tuple[float, float]], suggestion: float, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ZooError("Saving the plot needs matplotlib: pip install 'zoo-vision[plot]'.") from None
    if not output.parent.is_dir():
        raise ZooError(f"Folder {output.parent} does not exist; create it or pick another --output.")
    figure, axis = plt.subplots(figsize=(6, 4))
    try:
        axis.plot([p[0] for p in points], [p[1] for p in points])
        axis.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.3g}")
        axis.set_xscale("log")
        axis.set_xlabel("learning rate")
        axis.set_ylabel("training loss (smoothed)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(output, dpi=100)
    finally:
        plt.close(figure)
