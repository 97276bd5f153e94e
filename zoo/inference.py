"""Using a trained run: evaluate its best checkpoint, predict classes of new images, export it.

Imports torch lazily (the CLI imports this module only inside the commands that need it). It imports no store
code: the CLI passes in what it read from the registry and records what comes back.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
EXPORT_FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def checkpoint_of(run: Any) -> Path:
    """The best checkpoint file of a registry run, or a clear error."""
    if not run.checkpoint:
        raise ZooError(f"Run {run.id} has no saved checkpoint (status {run.status}: no epoch ended with a finite "
                       f"validation loss). Train it again with 'zoo train --from {run.id}'.")
    path = Path(run.checkpoint)
    if not path.is_file():
        raise ZooError(f"The checkpoint of run {run.id} is missing: '{path}'. It may have been moved or deleted; "
                       f"set ZOO_ARTIFACTS to the folder that holds it, or retrain with 'zoo train --from {run.id}'.")
    return path


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: list[list[int]]
    classes: list[str]
    dataset: str
    fingerprint: str


def evaluate_run(run: Any, data: Optional[str] = None, *, device: str = "auto", batch_size: int = 64,
                 warn=None) -> Evaluation:
    """Evaluate the run's best checkpoint on its own test split (``data`` None) or on every image of another
    image folder / registered dataset whose classes match the run's."""
    from zoo.checkpoint import build_from_checkpoint
    from zoo.data import Split, fingerprint_of, load_images, make_pipeline, resolve_data, split_samples
    from zoo.engine import evaluate, metrics_from_confusion, resolve_device, resolve_precision

    model, ckpt = build_from_checkpoint(checkpoint_of(run))
    classes, size = list(ckpt["classes"]), int(ckpt["image_size"])
    if data is None:
        if not run.dataset_path:
            raise ZooError(f"Run {run.id} recorded no dataset path; pass --data DIR to evaluate it on a folder.")
        root = Path(run.dataset_path)
        if not root.is_dir():
            raise ZooError(f"Run {run.id}'s dataset '{root}' no longer exists; pass --data DIR with the same classes.")
        ratios = _ratios(run.params.get("split", "8:1:1"))
        images = load_images(root, image_sizes=[size], split=ratios, warn=warn)
        split = split_samples(images, ratios, int(run.params.get("seed", 42)))
        if run.split_fingerprint and split.fingerprint != run.split_fingerprint and warn:
            warn(f"The files in '{root}' changed since run {run.id} was trained: its test split is not the same.")
        label = f"{root} (test split)"
    else:
        root, _ = resolve_data(data)
        images = load_images(root, image_sizes=[size], split=None, warn=warn)
        everything = list(range(len(images.samples)))
        split = Split([], [], everything, fingerprint_of([f"test\t{s.path}" for s in images.samples]))
        label = f"{root} (all images)"
    if images.classes != classes:
        raise ZooError(f"The classes of '{root}' ({', '.join(images.classes)}) do not match run {run.id}'s classes "
                       f"({', '.join(classes)}); pass a folder with one sub-folder per class of the run.")
    dev = resolve_device(device)
    pipeline = make_pipeline(images, split, image_size=size, batch_size=batch_size, device=dev)
    loss, _, confusion = evaluate(model.to(dev), pipeline.eval_batches("test", batch_size), len(classes), dev,
                                  resolve_precision("auto", dev))
    metrics = {**metrics_from_confusion(confusion, classes, loss), "images": float(len(split.test))}
    return Evaluation(metrics, confusion, classes, label, images.fingerprint)


def _ratios(text: Any) -> tuple:
    from zoo.data import parse_split

    return parse_split(str(text)) if not isinstance(text, (list, tuple)) else tuple(text)


# ------------------------------------------------------------------------------------------------- predict


def image_files(paths: list[str]) -> list[Path]:
    """Files named directly (whatever their suffix) and image files found under named directories, in order."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            out += sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(path).parts))
        elif path.exists():
            out.append(path)
        else:
            raise ZooError(f"'{p}' does not exist; pass image files or folders of images.")
    if not out:
        raise ZooError(f"No image files found in {', '.join(paths)}.")
    return out


def predict(run: Any, paths: list[str], *, top_k: int = 3, batch_size: int = 64) -> list[dict[str, Any]]:
    """One dict per file: {"file", "predictions": [{"class", "probability"}...]} or {"file", "error"}."""
    import torch

    from zoo.checkpoint import build_from_checkpoint
    from zoo.data import error_line, normalise, open_rgb, pil_eval_transform

    files = image_files(paths)
    model, ckpt = build_from_checkpoint(checkpoint_of(run))
    classes, size = list(ckpt["classes"]), int(ckpt["image_size"])
    transform = pil_eval_transform(size)
    k = max(1, min(top_k, len(classes)))
    results: list[dict[str, Any]] = [{"file": str(f)} for f in files]
    good: list[int] = []
    tensors = []
    for i, f in enumerate(files):
        try:
            tensors.append(transform(open_rgb(f)))
            good.append(i)
        except Exception as exc:  # each bad file is reported, the others still predicted
            results[i]["error"] = error_line(exc)
    with torch.inference_mode():
        for start in range(0, len(good), batch_size):
            x = normalise(torch.stack(tensors[start:start + batch_size]), ckpt["mean"], ckpt["std"])
            probs = model(x).float().softmax(1)
            top = probs.topk(k, dim=1)
            for row, (values, indices) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                results[good[start + row]]["predictions"] = [
                    {"class": classes[j], "probability": round(v, 6)} for v, j in zip(values, indices)]
    return results


# -------------------------------------------------------------------------------------------------- export


def _exportable(model: "torch.nn.Module", mean, std) -> "torch.nn.Module":
    """The model behind its own normalisation: takes float images in [0, 1], [N, 3, H, W], returns logits."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return Normalised(model).eval()


def export(run: Any, fmt: str, output: Path) -> dict[str, Any]:
    """Write the run's best model as TorchScript or ONNX; returns what a user of the file needs to know."""
    import torch

    from zoo.checkpoint import build_from_checkpoint

    if fmt not in EXPORT_FORMATS:
        raise ZooError(f"Unknown export format '{fmt}'; choose one of: {', '.join(EXPORT_FORMATS)}.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ZooError("ONNX export needs the 'onnx' extra: pip install 'zoo-vision[onnx]'.") from None
    model, ckpt = build_from_checkpoint(checkpoint_of(run))
    size = int(ckpt["image_size"])
    info = {"model": ckpt["model"], "classes": list(ckpt["classes"]), "image_size": size,
            "input": "float32 [N, 3, H, W] RGB in [0, 1], resized and centre-cropped to image_size",
            "output": "logits [N, num_classes] in the order of classes", "run": run.id}
    wrapped = _exportable(model, ckpt["mean"], ckpt["std"])
    example = torch.rand(1, 3, size, size)
    output = Path(output).expanduser()
    if output.is_dir():
        raise ZooError(f"--output '{output}' is a folder; give a file name, e.g. {output / ('model' + SUFFIX[fmt])}.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"Cannot create the folder of --output '{output}': {exc.strerror or exc}.") from None
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with torch.inference_mode(), contextlib.redirect_stdout(io.StringIO()):  # the ONNX exporter chats
            if fmt == "torchscript":
                with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; it still loads anywhere
                    warnings.simplefilter("ignore", FutureWarning)
                    scripted = torch.jit.trace(wrapped, example, check_trace=False)
                    torch.jit.save(scripted, str(tmp), _extra_files={"zoo.json": json.dumps(info)})
            else:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(wrapped, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                                  dynamic_shapes=({0: batch},))
        tmp.replace(output)
    except OSError as exc:
        raise ZooError(f"Cannot write --output '{output}': {exc.strerror or exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {**info, "file": str(output), "format": fmt}
