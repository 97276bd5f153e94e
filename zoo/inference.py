"""Using a trained run: evaluate its best checkpoint, predict classes of new images, export it.

Imports torch lazily (the CLI imports this module only inside the commands that need it). It imports no store
code: the CLI passes in what it read from the registry and records what comes back.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from zoo.errors import ZooError
from zoo.preprocess import IMAGENET, Preprocess

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
EXPORT_FORMATS = ("pt2", "onnx", "torchscript")  # the first is the default
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}


def checkpoint_of(run: Any) -> Path:
    """The best checkpoint file of a registry run, or a clear error."""
    if not run.checkpoint:
        status = getattr(run, "display_status", run.status)  # a run whose process died is 'stale', not 'running'
        raise ZooError(f"Run {run.id} has no saved checkpoint (status {status}: no epoch ended with a finite "
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


def uses_tta(run: Any, tta: Optional[bool]) -> bool:
    """Test-time flip: as asked, else as the run was tested (its ``tta`` param, recorded only when used)."""
    return bool(run.params.get("tta", False)) if tta is None else tta


def evaluate_run(run: Any, data: Optional[str] = None, *, device: str = "auto", batch_size: int = 64,
                 warn=None, tta: Optional[bool] = None) -> Evaluation:
    """Evaluate the run's best checkpoint on its own test split (``data`` None) or on every image of another
    image folder / registered dataset whose classes are the run's, or some of them (the macro averages are then
    over those classes, and ``warn`` says so). ``tta``: average each image's softmax with its mirror image's
    (None: as the run was tested)."""
    from zoo.checkpoint import build_from_checkpoint
    from zoo.data import Split, fingerprint_of, load_images, make_pipeline, resolve_data, split_samples
    from zoo.engine import evaluate, metrics_from_confusion, resolve_device, resolve_precision
    from zoo.engine.ema import flip_average

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
        from zoo.spec import split_seed_of

        split = split_samples(images, ratios, split_seed_of(run.params))
        if run.split_fingerprint and split.fingerprint != run.split_fingerprint and warn:
            warn(f"The files in '{root}' changed since run {run.id} was trained: its test split is not the same.")
        label = f"{root} (test split)"
    else:
        root, _ = resolve_data(data)
        images = load_images(root, image_sizes=[size], split=None, warn=warn)
        everything = list(range(len(images.samples)))
        split = Split([], [], everything, fingerprint_of([f"test\t{s.path}" for s in images.samples]))
        label = f"{root} (all images)"
    present = list(classes)
    if images.classes != classes and data is not None and set(images.classes) < set(classes):
        images, present = _as_run_classes(images, classes), list(images.classes)
        if warn:
            absent = [c for c in classes if c not in present]
            warn(f"'{root}' has {len(present)} of run {run.id}'s {len(classes)} classes (no {', '.join(absent)}): "
                 f"precision, recall and F1 are averaged over {', '.join(present)}; a prediction of "
                 f"{' or '.join(absent)} counts as a mistake.")
    elif images.classes != classes:
        raise ZooError(f"The classes of '{root}' ({', '.join(images.classes)}) do not match run {run.id}'s classes "
                       f"({', '.join(classes)}); pass a folder with one sub-folder per class of the run (or some of "
                       "them).")
    dev = resolve_device(device)
    pipeline = make_pipeline(images, split, image_size=size, batch_size=batch_size, device=dev,
                             prep=Preprocess.from_record(ckpt))
    model = flip_average(model.to(dev), uses_tta(run, tta))
    loss, _, confusion = evaluate(model, pipeline.eval_batches("test", batch_size), len(classes), dev,
                                  resolve_precision("auto", dev))
    metrics = {**metrics_from_confusion(confusion, classes, loss), "images": float(len(split.test))}
    if len(present) < len(classes):
        metrics = _macro_over(metrics, present)
    return Evaluation(metrics, confusion, classes, label, images.fingerprint)


def _as_run_classes(images, classes: list[str]):
    """An ImageSet of some of the run's classes, relabelled in the order of all the run's classes."""
    from dataclasses import replace

    index = [classes.index(c) for c in images.classes]
    return replace(images, classes=list(classes),
                   samples=[replace(s, label=index[s.label]) for s in images.samples])


def _macro_over(metrics: dict[str, float], present: list[str]) -> dict[str, float]:
    """The macro precision/recall/F1 over the classes present (the per-class values of the others dropped)."""
    from zoo.vocab import PER_CLASS, metric_key, split_metric_key

    out = {k: v for k, v in metrics.items() if split_metric_key(k)[1] in (None, *present)}
    for metric in PER_CLASS:
        values = [metrics[metric_key(metric, c)] for c in present]
        out[metric_key(metric)] = sum(values) / len(values)
    return out


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
            # every non-folder with an image suffix, so a broken symlink or a named pipe is listed as unreadable
            out += sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()
                          and not any(part.startswith(".") for part in f.relative_to(path).parts))
        elif path.exists() or path.is_symlink():  # a broken symlink is reported with the unreadable files
            out.append(path)
        else:
            raise ZooError(f"'{p}' does not exist; pass image files or folders of images.")
    if not out:
        raise ZooError(f"No image files found in {', '.join(paths)}.")
    return out


def predict(run: Any, paths: list[str], *, top_k: int = 3, batch_size: int = 64,
            device: str = "cpu", tta: Optional[bool] = None) -> list[dict[str, Any]]:
    """One dict per file: {"file", "predictions": [{"class", "probability"}...]} or {"file", "error"}.
    ``tta``: the mean softmax of each image and its mirror image (None: as the run was tested)."""
    import torch

    from zoo.engine import resolve_device
    from zoo.engine.ema import flip_average

    from zoo.checkpoint import build_from_checkpoint
    from zoo.data import error_line, normalise, open_rgb, pil_eval_transform, pillow_size_warnings_off

    files = image_files(paths)
    dev = resolve_device(device)
    model, ckpt = build_from_checkpoint(checkpoint_of(run))
    model = flip_average(model.to(dev), uses_tta(run, tta))
    classes, size = list(ckpt["classes"]), int(ckpt["image_size"])
    prep = Preprocess.from_record(ckpt)
    transform = pil_eval_transform(size, prep)
    k = max(1, min(top_k, len(classes)))
    results: list[dict[str, Any]] = [{"file": str(f)} for f in files]
    good: list[int] = []
    tensors = []
    with pillow_size_warnings_off():
        for i, f in enumerate(files):
            try:
                tensors.append(transform(open_rgb(f, math.ceil(size / prep.crop_fraction))))
                good.append(i)
            except Exception as exc:  # each bad file is reported, the others still predicted
                results[i]["error"] = error_line(exc)
    with torch.inference_mode():
        for start in range(0, len(good), batch_size):
            x = normalise(torch.stack(tensors[start:start + batch_size]).to(dev), prep.mean, prep.std)
            probs = model(x).float().softmax(1)
            top = probs.topk(k, dim=1)
            for row, (values, indices) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                results[good[start + row]]["predictions"] = [
                    {"class": classes[j], "probability": round(v, 6)} for v, j in zip(values, indices)]
    return results


# -------------------------------------------------------------------------------------------------- export

# protobuf refuses messages of 2 GiB; below this many bytes of weights an ONNX file holds its weights itself
ONNX_INLINE_LIMIT = 2**31 - 2**27
EXAMPLE_IMAGE = "photo.jpg"  # the placeholder the printed example opens


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


def export_format(fmt: Optional[str], output: Optional[Path]) -> str:
    """``--format`` as given, else the one the output's suffix names (.onnx, .pt2), else pt2."""
    if fmt is None:
        by_suffix = {".onnx": "onnx", ".pt2": "pt2"}
        return by_suffix.get(output.suffix.lower(), EXPORT_FORMATS[0]) if output is not None else EXPORT_FORMATS[0]
    if fmt.lower() not in EXPORT_FORMATS:
        raise ZooError(f"Unknown export format '{fmt}'; choose one of: {', '.join(EXPORT_FORMATS)}.")
    return fmt.lower()


def preprocessing(image_size: int, prep: Preprocess) -> dict[str, Any]:
    """How an image becomes the exported model's input, exactly as ``zoo predict`` does it."""
    side = prep.resize_to(image_size)
    return {
        "steps": ["open as RGB, EXIF orientation applied", f"resize the shorter side to {side}"
                  f" px ({prep.interpolation}, antialiased, on the uint8 tensor as torchvision's v2.Resize)",
                  f"centre-crop {image_size} x {image_size}", "divide by 255 (float32 in [0, 1])"],
        "resize_shorter_side": side, "interpolation": prep.interpolation, "antialias": True,
        "center_crop": image_size, "crop_fraction": prep.crop_fraction, "input_range": [0.0, 1.0],
        "mean": [float(m) for m in prep.mean], "std": [float(s) for s in prep.std],
        "normalisation": "inside the model: (x - mean) / std per channel; give it x in [0, 1]",
    }


def example_code(fmt: str, file: str, classes: list[str], image_size: int,
                 preprocess: Preprocess = IMAGENET) -> list[str]:
    """Three lines of Python that load ``file`` without zoo and print each class's probability for one image,
    the same numbers as ``zoo predict``."""
    q = json.dumps
    imports = "import torch; from PIL import Image, ImageOps; from torchvision.transforms import v2"
    how = ("" if preprocess.interpolation == "bilinear"
           else f", interpolation=v2.InterpolationMode.{preprocess.interpolation.upper()}")
    prep = (f"prep = v2.Compose([v2.PILToTensor(), v2.Resize({preprocess.resize_to(image_size)}{how}, antialias=True), "
            f"v2.CenterCrop({image_size}), v2.ToDtype(torch.float32, scale=True)])")
    image = f"prep(ImageOps.exif_transpose(Image.open({q(EXAMPLE_IMAGE)}).convert('RGB')))[None]"
    if fmt == "onnx":
        return [f"import onnxruntime, {imports[7:]}; session = onnxruntime.InferenceSession({q(file)})", prep,
                f"print(dict(zip({q(classes)}, torch.from_numpy(session.run(None, {{'image': {image}.numpy()}})[0])"
                f".softmax(1)[0].tolist())))"]
    load = f"torch.export.load({q(file)}).module()" if fmt == "pt2" else f"torch.jit.load({q(file)})"
    return [f"{imports}; model = {load}", prep,
            f"print(dict(zip({q(classes)}, model({image}).softmax(1)[0].tolist())))"]


def sidecar_of(output: Path) -> Path:
    """The description written beside an export: model.pt2 -> model.json."""
    return output.with_suffix(".json")


def _output_path(output: Path, fmt: str, force: bool) -> Path:
    """The file to write (a format suffix added when it has none), after the checks that need no model: not a
    folder, nothing overwritten without ``force``, its folder there or creatable (only that one folder)."""
    output = Path(output).expanduser()
    if output.is_dir():
        raise ZooError(f"--output '{output}' is a folder; give a file name, e.g. {output / ('model' + SUFFIX[fmt])}.")
    if output.exists() and not output.is_file():  # /dev/null, a pipe, a socket: no place for a model and its .json
        raise ZooError(f"--output '{output}' is not a regular file; give a file name such as model{SUFFIX[fmt]}.")
    if not output.suffix:
        output = output.with_name(output.name + SUFFIX[fmt])
    if output.suffix.lower() == ".json":
        raise ZooError(f"--output '{output}' ends in .json, the name of the description zoo writes beside the "
                       f"model; give the model file a name such as {output.with_suffix(SUFFIX[fmt])}.")
    parent = output.parent
    if not parent.is_dir():
        if parent.exists():
            raise ZooError(f"Cannot create the folder of --output '{output}': '{parent}' is a file.")
        if not parent.parent.is_dir():
            what = "is a file" if parent.parent.exists() else "does not exist either"
            raise ZooError(f"Cannot create the folder of --output '{output}': '{parent.parent}' {what} "
                           f"(zoo creates only the file's own folder, '{parent.name}').")
    taken = [p for p in (output, output.with_name(output.name + ".data")) if p.exists()]
    if fmt != "onnx":
        taken = taken[:1]
    if taken and not force:
        raise ZooError(f"'{taken[0]}' already exists; pass --force to overwrite it, or choose another --output.")
    return output


def export(run: Any, fmt: str, output: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the run's best model as pt2 (torch.export), ONNX or TorchScript, with a sidecar NAME.json that says
    what goes in and out; returns that description (with the ``example`` lines and the ``file`` written)."""
    fmt = export_format(fmt, None)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ZooError("ONNX export needs the 'onnx' extra: pip install 'zoo-vision[onnx]'.") from None
    output = _output_path(output, fmt, force)
    sidecar = sidecar_of(output)
    previous = _read_sidecar(sidecar)
    if sidecar.exists() and not force and (previous is None or previous.get("run_uuid") != run.uuid):
        raise ZooError(f"'{sidecar}' already exists and does not describe run {run.id}; pass --force to overwrite "
                       f"it, or choose another --output.")

    import torch

    from zoo.checkpoint import build_from_checkpoint

    model, ckpt = build_from_checkpoint(checkpoint_of(run))
    size, classes = int(ckpt["image_size"]), list(ckpt["classes"])
    info: dict[str, Any] = {
        "zoo_export": 1, "run": run.id, "run_uuid": run.uuid, "model": ckpt["model"], "classes": classes,
        "image_size": size,
        "input": {"name": "image", "dtype": "float32", "shape": ["N", 3, size, size], "layout": "NCHW, RGB",
                  "range": [0.0, 1.0]},
        "output": {"name": "logits", "shape": ["N", len(classes)],
                   "meaning": "one logit per class, in the order of classes; softmax gives the probabilities"},
        "preprocessing": preprocessing(size, Preprocess.from_record(ckpt)),
    }
    wrapped = _exportable(model, ckpt["mean"], ckpt["std"])
    example = torch.rand(2, 3, size, size)
    weight_bytes = sum(t.numel() * t.element_size() for t in wrapped.state_dict().values())

    created = None
    if not output.parent.is_dir():
        try:
            output.parent.mkdir()
        except OSError as exc:
            raise ZooError(f"Cannot create the folder of --output '{output}': {exc.strerror or exc}.") from None
        created = output.parent
    work = output.parent / f".{output.name}.{os.getpid()}.zoo-export"
    done = False
    try:
        work.mkdir(exist_ok=True)
        staged = work / output.name
        _write_model(fmt, wrapped, example, staged, info, weight_bytes)
        data = staged.with_name(staged.name + ".data")
        if data.exists():  # ONNX beyond protobuf's limit: the weights beside it, under the name the file records
            os.replace(data, output.with_name(output.name + ".data"))
        elif fmt == "onnx" and force:
            output.with_name(output.name + ".data").unlink(missing_ok=True)  # an older large export's weights
        os.replace(staged, output)
        described = dict(previous or {}) if previous and previous.get("run_uuid") == run.uuid else {}
        lines = example_code(fmt, str(output), classes, size, Preprocess.from_record(ckpt))
        files = {**described.get("files", {}), fmt: output.name}  # examples there: run from the file's folder
        examples = {**described.get("examples", {}),
                    fmt: example_code(fmt, output.name, classes, size, Preprocess.from_record(ckpt))}
        _write_json(sidecar, {**info, "files": files, "examples": examples}, work)
        done = True
    except OSError as exc:
        raise ZooError(f"Cannot write --output '{output}': {exc.strerror or exc}.") from None
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        if not done and created is not None:
            with contextlib.suppress(OSError):
                created.rmdir()  # only when nothing landed in it
    return {**info, "file": str(output), "format": fmt, "sidecar": str(sidecar), "bytes": output.stat().st_size,
            "data_file": str(output.with_name(output.name + ".data")) if weight_bytes > ONNX_INLINE_LIMIT
            and fmt == "onnx" else None, "example": lines}


def _write_model(fmt: str, wrapped, example, path: Path, info: dict, weight_bytes: int) -> None:
    import torch

    embedded = json.dumps(info)
    with torch.inference_mode(False), torch.no_grad():
        if fmt == "pt2":
            batch = torch.export.Dim("batch")
            try:
                program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
            except Exception as exc:  # e.g. data-dependent control flow in a plugin's model
                raise ZooError(f"torch.export cannot capture model '{info['model']}': {_first_line(exc)} "
                               "Try --format onnx or --format torchscript.") from None
            torch.export.save(program, str(path), extra_files={"zoo.json": embedded})
        elif fmt == "torchscript":
            with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; it still loads anywhere
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.trace(wrapped, example, check_trace=False)
                torch.jit.save(scripted, str(path), _extra_files={"zoo.json": embedded})
        else:
            batch = torch.export.Dim("batch")
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the ONNX exporter reports its progress
                    program = torch.onnx.export(wrapped, (example,), None, input_names=["image"],
                                                output_names=["logits"], dynamic_shapes=({0: batch},))
            except Exception as exc:
                raise ZooError(f"The ONNX exporter cannot convert model '{info['model']}': {_first_line(exc)} "
                               "Try --format pt2.") from None
            props = program.model.metadata_props
            for key in ("classes", "preprocessing", "input", "output"):
                props[key] = json.dumps(info[key])
            props.update({"model": str(info["model"]), "run": str(info["run"]), "run_uuid": str(info["run_uuid"]),
                          "image_size": str(info["image_size"]), "zoo": embedded})
            program.save(str(path), external_data=weight_bytes > ONNX_INLINE_LIMIT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = (text[0] if text else type(exc).__name__)[:200]
    return line if line.endswith(".") else line + "."


def _read_sidecar(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("zoo_export") else None


def _write_json(path: Path, data: dict, work: Path) -> None:
    staged = work / path.name
    staged.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(staged, path)
