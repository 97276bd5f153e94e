"""The training engine: device and precision, the loop, early stopping, evaluation and test metrics.

It imports no database or CLI code. It reports through a ``Callbacks`` object (the CLI's recorder writes those
reports to the registry and draws the progress bar), so the same loop serves the CLI, tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from zoo.errors import ZooError
from zoo.metrics import summarize
from zoo.spec import PRECISIONS, Resolved, RunSpec
from zoo.vocab import HISTORY_KEYS, TEST, Status, StopReason

if TYPE_CHECKING:
    import torch

    from zoo.data import Pipeline
    from zoo.distributed import World
    from zoo.models import ModelInfo



# ------------------------------------------------------------------------------------------ device, precision


def resolve_device(spec: str = "auto") -> "torch.device":
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device; an unavailable device is a ZooError."""
    import torch

    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ZooError(f"--device {spec}: no CUDA GPU is available to this torch ({torch.__version__}); "
                           f"use --device cpu or --device auto.")
        index = torch.cuda.current_device() if text == "cuda" else text.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ZooError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA device(s), "
                           f"numbered from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
        return torch.device("cuda", int(index))
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ZooError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto.")
        return torch.device("mps")
    raise ZooError(f"--device '{spec}' is not a device; use auto, cpu, cuda, cuda:N or mps.")


def resolve_precision(spec: str, device: "torch.device") -> str:
    """'auto' -> bf16 on GPUs that support it, fp16 (with a gradient scaler) on other GPUs, fp32 elsewhere."""
    import torch

    text = (spec or "auto").strip().lower()
    if text not in PRECISIONS:
        raise ZooError(f"--precision '{spec}' is not one of {', '.join(PRECISIONS)}.")
    if text == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if text == "fp16" and device.type != "cuda":
        raise ZooError(f"--precision fp16 needs a CUDA GPU (device here: {device}); use fp32 or bf16.")
    if text == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ZooError("--precision bf16: this GPU does not support bfloat16; use fp16 or auto.")
    return text


def autocast(device: "torch.device", precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EpochStats:
    """One finished epoch, as recorded in the history (field names are the history keys of zoo.vocab)."""

    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_sec: float

    def as_row(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in HISTORY_KEYS}


@dataclass
class TrainResult:
    status: Status  # completed | failed
    stop_reason: StopReason  # early_stop | max_epochs | nan_loss
    epochs_run: int
    best_epoch: Optional[int]
    checkpoint: Optional[str]
    metrics: dict[str, float] = field(default_factory=dict)
    confusion: Optional[list[list[int]]] = None
    error: Optional[str] = None
    history: list[EpochStats] = field(default_factory=list)


class Callbacks:
    """What the engine reports while it trains; override any subset. Exceptions raised here propagate (a
    KeyboardInterrupt raised in a callback behaves like Ctrl-C)."""

    def on_message(self, text: str) -> None:  # e.g. how many tensors of --weights were loaded
        pass

    def on_warning(self, text: str) -> None:  # e.g. which tensors of --weights were skipped
        self.on_message(text)

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        pass

    def on_batch(self, epoch: int, batch: int, batches: int, running_loss: float, images_per_sec: float) -> None:
        pass

    def on_epoch_end(self, epoch: int, values: EpochStats, improved: bool) -> None:
        pass

    def on_checkpoint(self, path: str, epoch: int) -> None:
        pass

    def on_test(self, metrics: dict[str, float], confusion: list[list[int]]) -> None:
        pass


# ------------------------------------------------------------------------------------------------- metrics


def metrics_from_confusion(confusion: list[list[int]], classes: list[str], loss: Optional[float] = None,
                           prefix: str = TEST) -> dict[str, float]:
    """Accuracy, per-class and macro precision/recall/F1 from confusion[true][pred] (zoo.metrics.summarize)."""
    return summarize(confusion, classes, loss, prefix)


def evaluate(model: "torch.nn.Module", batches, num_classes: int, device: "torch.device",
             precision: str = "fp32", world: Optional["World"] = None) -> tuple[float, float, list[list[int]]]:
    """(mean loss, accuracy, confusion[true][pred]) of ``model`` over (x, y) batches, without gradients. Under
    torchrun (``world``) each rank evaluates its share of the batches and the sums cover the whole split."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    seen = 0
    with torch.inference_mode():
        for x, y in batches:
            with autocast(device, precision):
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            confusion += torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes * num_classes)
            seen += len(y)
    if world is not None and world.launched:  # one collective: the loss sum rides with the counts
        total = world.sum(torch.cat([loss_sum.view(1), confusion.double()]))
        loss_sum, confusion = total[0], total[1:].round().long()
        seen = int(confusion.sum())
    matrix = confusion.view(num_classes, num_classes).tolist()
    if not seen:
        return float("nan"), 0.0, matrix
    correct = sum(matrix[i][i] for i in range(num_classes))
    return float(loss_sum) / seen, correct / seen, matrix


# ---------------------------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def build_model(info: "ModelInfo", num_classes: int, spec: RunSpec,
                callbacks: Optional[Callbacks] = None) -> "torch.nn.Module":
    """The architecture with ``num_classes`` outputs: pretrained weights, then --weights FILE, if asked."""
    callbacks = callbacks or Callbacks()
    spec = spec.with_recipe()
    seed_everything(spec.seed)  # the same initial weights for the same model and seed
    model = info.build(num_classes, pretrained=spec.pretrained)
    if spec.weights:
        from zoo.checkpoint import describe_skipped, load_weights

        loaded, skipped = load_weights(model, Path(spec.weights), info.name)
        callbacks.on_message(f"Loaded {loaded} tensor(s) from '{spec.weights}' into {info.name}.")
        if skipped:
            callbacks.on_warning(describe_skipped(skipped, Path(spec.weights)))
    return model


def make_optimizer(model: "torch.nn.Module", spec: RunSpec) -> "torch.optim.Optimizer":
    """sgd | nesterov (SGD with Nesterov momentum) | adamw. Without ``bias_decay``, biases and normalisation
    weights (every parameter with one dimension) get no weight decay."""
    import torch

    if spec.bias_decay or not spec.weight_decay:
        params: Any = model.parameters()  # the seed recipe: one group, in the model's order
    else:
        decay = [p for p in model.parameters() if p.ndim > 1]
        plain = [p for p in model.parameters() if p.ndim <= 1]
        params = [{"params": decay}, {"params": plain, "weight_decay": 0.0}]
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    nesterov = spec.optimizer == "nesterov"
    if nesterov and not spec.momentum:
        raise ZooError("--optimizer nesterov needs --momentum above 0 (0.9 is usual).")
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                           nesterov=nesterov)


def lr_factor(step: int, spec: RunSpec, batches: int) -> float:
    """The fraction of the peak lr at optimizer step ``step`` (0-based) of a run of ``spec.epochs`` epochs:
    a linear warm-up from 1/25 over ``warmup_epochs``, then constant, cosine to 0, onecycle (warm-up over 30%
    of the steps when none is given, then cosine to 0), or step (x0.1 at half and at three quarters)."""
    total = max(1, spec.epochs * batches)
    warmup = spec.warmup_epochs * batches
    if spec.schedule == "onecycle" and not warmup:
        warmup = 0.3 * total
    if warmup and step < warmup:
        return 1 / 25 + (1 - 1 / 25) * step / warmup
    if spec.schedule in ("cosine", "onecycle"):
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    if spec.schedule == "step":
        epoch = step // max(1, batches)
        return 0.1 ** ((epoch >= spec.epochs // 2) + (epoch >= (3 * spec.epochs) // 4))
    return 1.0


def make_scheduler(optimizer: "torch.optim.Optimizer", spec: RunSpec, batches: int):
    """A per-batch LambdaLR for ``lr_factor``; None for the constant schedule without warm-up (the seed recipe)."""
    import torch

    if spec.schedule == "constant" and not spec.warmup_epochs:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, spec, batches))


def setup_backend(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def train(info: "ModelInfo", pipeline: "Pipeline", classes: list[str], spec: RunSpec, resolved: Resolved,
          callbacks: Optional[Callbacks] = None, checkpoint_path: Optional[Path] = None,
          model: Optional["torch.nn.Module"] = None, resume: Optional[dict] = None) -> TrainResult:
    """Train ``info``'s architecture on the pipeline's train split with early stopping on validation loss,
    restore the best weights, evaluate on the test split. A NaN/inf loss returns status 'failed'; Ctrl-C
    (KeyboardInterrupt) propagates after the best checkpoint so far has been written.

    With a ``checkpoint_path``, ``last.pt`` beside it holds everything needed to go on after epoch k (weights,
    optimizer, schedule, RNG and early-stopping state; written atomically each epoch, removed once the run has
    ended); ``resume`` is such a file's content: training goes on from epoch k + 1 exactly as it would have."""
    import torch
    import torch.nn.functional as F

    from zoo.checkpoint import LAST_FORMAT, atomic_save, load_checkpoint, save_checkpoint
    from zoo.data import IMAGENET_MEAN, IMAGENET_STD
    from zoo.distributed import current

    world = current()  # under torchrun: DDP, this rank's share of the data, sums over the ranks

    callbacks = callbacks or Callbacks()
    spec = spec.with_recipe()
    device = torch.device(resolved.device)
    precision = resolved.precision
    setup_backend(device)
    num_classes = len(classes)
    if model is None:
        model = build_model(info, num_classes, spec, callbacks)
    model = model.to(device)
    if device.type in ("cuda", "cpu"):  # NHWC: faster convolutions with cuDNN and oneDNN alike
        model = model.to(memory_format=torch.channels_last)
    net = world.wrap(model, device)
    step_model = torch.compile(net) if spec.compile else net
    # Evaluation runs each rank's share through the bare model (DDP would sync buffers on a forward).
    eval_model = step_model if net is model else (torch.compile(model) if spec.compile else model)
    optimizer = make_optimizer(model, spec)
    batches = pipeline.batches_per_epoch()
    scheduler = make_scheduler(optimizer, spec, batches)
    step_lr = optimizer.param_groups[0]["lr"]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(spec.seed)

    # What to try after a NaN/inf loss: fp32 only helps when the run was not already in fp32.
    remedy = "try a lower --lr" + (" or --precision fp32" if precision in ("bf16", "fp16") else "") + "."
    best_loss, best_epoch, best_state, waited = math.inf, None, None, 0
    history: list[EpochStats] = []
    stop_reason, status, error = StopReason.MAX_EPOCHS, Status.COMPLETED, None
    epoch = 0
    last_path = checkpoint_path.with_name("last.pt") if checkpoint_path is not None else None
    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler") is not None:
            scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler") is not None:
            scaler.load_state_dict(resume["scaler"])
        step_lr = optimizer.param_groups[0]["lr"]
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        best_loss, best_epoch, waited = float(resume["best_loss"]), resume["best_epoch"], int(resume["waited"])
        history = [EpochStats(**row) for row in resume["history"]]
        best_state = resume.get("best_model")  # last.pt holds the best weights: best.pt is never needed
        if best_state is None and best_epoch is not None and best_epoch == int(resume["epoch"]):
            best_state = resume["model"]
        elif best_state is None and best_epoch is not None and checkpoint_path is not None:  # an older last.pt
            best_state = load_checkpoint(checkpoint_path)["state_dict"]
        first = int(resume["epoch"]) + 1

    def save_last() -> None:
        if last_path is None:
            return
        atomic_save({"format": LAST_FORMAT, "version": 1, "epoch": epoch,
                     "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                     "best_loss": best_loss, "best_epoch": best_epoch, "waited": waited,
                     "best_model": best_state if best_epoch != epoch else None,  # else: the weights above
                     "history": [h.as_row() for h in history]}, last_path)

    def save_best() -> Optional[str]:
        if checkpoint_path is None or best_state is None:
            return None
        save_checkpoint(checkpoint_path, model=info.name, plugin=info.plugin, classes=classes,
                        image_size=pipeline.image_size, state_dict=best_state, epoch=best_epoch,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return str(checkpoint_path)

    if resume is not None:
        save_best()  # from last.pt: best.pt may be damaged, or hold an epoch whose history was never recorded

    for epoch in range(first, spec.epochs + 1):
        callbacks.on_epoch_start(epoch, batches)
        step_model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen, last_report = 0, started
        nan_at = None
        for i, (x, y) in enumerate(pipeline.train_epoch(generator), 1):
            with autocast(device, precision):
                out = step_model(x)
                loss = F.cross_entropy(out, y, label_smoothing=spec.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            step_lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach().float() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            now = time.perf_counter()
            if now - last_report >= 0.1 or i == batches:  # reading the loss syncs a GPU: a few times a second
                last_report = now
                running = float(loss_sum) / seen
                if not math.isfinite(running) and not world.launched:  # ranks stop together, at the epoch's end
                    nan_at = i
                    break
                callbacks.on_batch(epoch, i, batches, running, seen / (now - started))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started
        if world.launched:  # the epoch over every rank's share
            count = torch.tensor(float(seen), dtype=torch.float64, device=device)
            total = world.sum(torch.stack([loss_sum.double(), correct.double(), count]))
            loss_sum, correct, seen = total[0], total[1], int(total[2])
            world.agree(model)
        train_loss = float(loss_sum) / max(seen, 1)
        if nan_at is not None or not math.isfinite(train_loss):
            stop_reason, status = StopReason.NAN_LOSS, Status.FAILED
            where = f" (batch {nan_at})" if nan_at else ""
            error = (f"The training loss became {train_loss if not math.isfinite(train_loss) else 'NaN'} in epoch "
                     f"{epoch}{where}; {remedy}")
            break
        val_loss, val_acc, _ = evaluate(eval_model, pipeline.eval_batches("val"), num_classes, device,
                                        precision, world)
        values = EpochStats(train_loss=train_loss, train_acc=float(correct) / max(seen, 1), val_loss=val_loss,
                            val_acc=val_acc, lr=step_lr,
                            seconds=time.perf_counter() - started, images_per_sec=seen / max(train_seconds, 1e-9))
        history.append(values)
        if not math.isfinite(val_loss):
            stop_reason, status = StopReason.NAN_LOSS, Status.FAILED
            error = f"The validation loss became {val_loss} in epoch {epoch}; {remedy}"
            callbacks.on_epoch_end(epoch, values, False)
            break
        improved = val_loss < best_loss - spec.min_delta
        if improved:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            path = save_best()
            if path:
                callbacks.on_checkpoint(path, epoch)
        else:
            waited += 1
        save_last()
        callbacks.on_epoch_end(epoch, values, improved)
        if not improved and waited >= spec.patience:
            stop_reason = StopReason.EARLY_STOP
            break

    epochs_run = len(history)
    checkpoint = str(checkpoint_path) if (checkpoint_path and best_state is not None) else None
    result = TrainResult(status, stop_reason, epochs_run, best_epoch, checkpoint, error=error, history=history)
    if status == Status.FAILED:
        _remove(last_path)
        return result
    model.load_state_dict(best_state)  # early stopping restores the best weights, also at max_epochs
    test_loss, _, confusion = evaluate(eval_model, pipeline.eval_batches("test"), num_classes, device,
                                       precision, world)
    result.metrics = metrics_from_confusion(confusion, classes, test_loss)
    result.confusion = confusion
    callbacks.on_test(result.metrics, confusion)
    _remove(last_path)  # the run has ended: nothing to resume
    return result


def _remove(path: Optional[Path]) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- lr finder


def lr_range_test(model: "torch.nn.Module", pipeline: "Pipeline", spec: RunSpec, resolved: Resolved, *,
                  start: float = 1e-6, end: float = 10.0, steps: int = 100) -> list[tuple[float, float]]:
    """The learning-rate range test (Smith 2015; fastai's lr_find): one optimizer step per batch with the lr
    growing exponentially from ``start`` to ``end``; returns (lr, smoothed loss) until the loss diverges."""
    import torch
    import torch.nn.functional as F

    spec = spec.with_recipe()
    device = torch.device(resolved.device)
    model = model.to(device).train()
    optimizer = make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(spec.seed)
    points: list[tuple[float, float]] = []
    smooth, best, beta, step = 0.0, math.inf, 0.9, 0
    while step < steps:
        for x, y in pipeline.train_epoch(generator):
            lr = start * (end / start) ** (step / max(1, steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, resolved.precision):
                loss = F.cross_entropy(model(x), y, label_smoothing=spec.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            step += 1
            smooth = beta * smooth + (1 - beta) * value if math.isfinite(value) else math.inf
            debiased = smooth / (1 - beta ** step)
            if not math.isfinite(debiased) or (step > 10 and debiased > 4 * best):
                return points
            best = min(best, debiased)
            points.append((lr, debiased))
            if step >= steps:
                break
    return points


def suggest_lr(points: list[tuple[float, float]]) -> Optional[float]:
    """A tenth of the lr where the smoothed loss is lowest (past it the loss climbs: too high to train with);
    None with too few points to tell."""
    if len(points) < 10:
        return None
    lowest = min(points, key=lambda p: p[1])
    return lowest[0] / 10


__all__ = ["Callbacks", "EpochStats", "TrainResult", "lr_range_test", "suggest_lr", "evaluate", "metrics_from_confusion", "resolve_device",
           "resolve_precision", "train"]
