"""The training loop: ``train_one_epoch``, ``evaluate``, and ``train``, which reads as the story of one run.

Everything else the loop does (early stopping, checkpoints, the NaN guard, progress, recording) is a callback;
see ``zoo.engine.callbacks``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from zoo.checkpoint import signals_after
from zoo.engine.callbacks import Callbacks, CallbackList, Progress, Run, StopTraining
from zoo.engine.config import TrainConfig
from zoo.engine.device import autocast, seed_everything, setup_backend
from zoo.spec import Resolved, RunSpec
from zoo.vocab import HISTORY_KEYS, VAL_ACC, Status, StopReason

if TYPE_CHECKING:
    import torch

    from zoo.data import Pipeline
    from zoo.distributed import World
    from zoo.models import ModelInfo
    from zoo.plugins import Plugins


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

    @classmethod
    def from_logs(cls, logs: dict[str, Any]) -> "EpochStats":
        return cls(**{key: logs[key] for key in HISTORY_KEYS})


@dataclass
class TrainResult:
    status: Status  # completed | failed
    stop_reason: str  # a StopReason (early_stop | max_epochs | nan_loss) or a callback's own word
    epochs_run: int
    best_epoch: Optional[int]
    checkpoint: Optional[str]
    metrics: dict[str, float] = field(default_factory=dict)
    confusion: Optional[list[list[int]]] = None
    error: Optional[str] = None
    history: list[EpochStats] = field(default_factory=list)
    # Each test image's (predicted class, top probability), in the test split's order (every rank under torchrun).
    predictions: Optional[list[tuple[int, float]]] = None


# ------------------------------------------------------------------------------------------------- the model


def build_model(info: "ModelInfo", num_classes: int, spec: Union[RunSpec, TrainConfig],
                callbacks: Optional[Callbacks] = None) -> "torch.nn.Module":
    """The architecture with ``num_classes`` outputs: pretrained weights, then --weights FILE, if asked."""
    callbacks = callbacks or Callbacks()
    seed_everything(spec.seed)  # the same initial weights for the same model and seed
    model = info.build(num_classes, pretrained=spec.pretrained)
    if spec.weights:
        from zoo.checkpoint import describe_skipped, load_weights

        loaded, skipped = load_weights(model, Path(spec.weights), info.name)
        callbacks.on_message(f"Loaded {loaded} tensor(s) from '{spec.weights}' into {info.name}.")
        if skipped:
            callbacks.on_warning(describe_skipped(skipped, Path(spec.weights)))
    return model


@dataclass
class Parts:
    """The loop's working parts for one run (callbacks reach them through ``Run``)."""

    device: "torch.device"
    precision: str
    world: "World"
    step_model: "torch.nn.Module"  # what a training step calls: DDP-wrapped and/or compiled
    eval_model: "torch.nn.Module"  # what evaluation calls: each rank's share through the bare model
    loss_fn: Any
    pipeline: "Pipeline"
    lr: float = 0.0  # the lr of the last optimizer step (what the epoch's history records)


def _place(model: "torch.nn.Module", config: TrainConfig, device: "torch.device", world: "World"):
    """The model on its device (NHWC where convolutions are faster), wrapped for DDP and torch.compile."""
    import torch

    model = model.to(device)
    if device.type in ("cuda", "cpu"):  # NHWC: faster convolutions with cuDNN and oneDNN alike
        model = model.to(memory_format=torch.channels_last)
    net = world.wrap(model, device)
    step_model = torch.compile(net) if config.compile else net
    # Evaluation runs each rank's share through the bare model (DDP would sync buffers on a forward).
    eval_model = step_model if net is model else (torch.compile(model) if config.compile else model)
    return model, step_model, eval_model


# ---------------------------------------------------------------------------------------------- one epoch


def train_one_epoch(run: Run, parts: Parts, epoch: int, callbacks: CallbackList) -> dict[str, Any]:
    """One pass over the train split; the epoch's train loss, accuracy, lr and images/s (over every rank)."""
    import torch

    device, batches = parts.device, run.batches
    parts.step_model.train()
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, last_report = 0, started
    stepping = any(hasattr(cb, "on_step_end") for cb in callbacks.callbacks)  # every optimizer step (--ema)
    for i, (x, y) in enumerate(parts.pipeline.train_epoch(run.generator), 1):
        with autocast(device, parts.precision):
            out = parts.step_model(x)
            loss = parts.loss_fn(out, y)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        parts.lr = run.optimizer.param_groups[0]["lr"]
        if run.scheduler is not None:
            run.scheduler.step()
        if stepping:
            callbacks.call("on_step_end", run, epoch, i)
        loss_sum += loss.detach().float() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        now = time.perf_counter()
        if now - last_report >= 0.1 or i == batches:  # reading the loss syncs a GPU: a few times a second
            last_report = now
            callbacks.call("on_batch_end", run, epoch, i, {"loss": float(loss_sum) / seen,
                                                          "images_per_sec": seen / (now - started),
                                                          "batches": batches})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - started
    if parts.world.launched:  # the epoch over every rank's share
        count = torch.tensor(float(seen), dtype=torch.float64, device=device)
        total = parts.world.sum(torch.stack([loss_sum.double(), correct.double(), count]))
        loss_sum, correct, seen = total[0], total[1], int(total[2])
        parts.world.agree(run.model)
    return {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1),
            "lr": parts.lr, "images_per_sec": seen / max(train_seconds, 1e-9), "started": started}


def evaluate(model: "torch.nn.Module", batches, num_classes: int, device: "torch.device",
             precision: str = "fp32", world: Optional["World"] = None, outputs: Optional[list] = None
             ) -> tuple[float, float, list[list[int]]]:
    """(mean loss, accuracy, confusion[true][pred]) of ``model`` over (x, y) batches, without gradients. Under
    torchrun (``world``) each rank evaluates its share of the batches and the sums cover the whole split. With
    ``outputs`` (a list), each batch's (labels, softmax) is appended to it, on the CPU."""
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
            if outputs is not None:
                outputs.append((y.cpu(), out.float().softmax(1).cpu()))
    if world is not None and world.launched:  # one collective: the loss sum rides with the counts
        total = world.sum(torch.cat([loss_sum.view(1), confusion.double()]))
        loss_sum, confusion = total[0], total[1:].round().long()
        seen = int(confusion.sum())
    matrix = confusion.view(num_classes, num_classes).tolist()
    if not seen:
        return float("nan"), 0.0, matrix
    correct = sum(matrix[i][i] for i in range(num_classes))
    return float(loss_sum) / seen, correct / seen, matrix


def test_run(run: Run, parts: Parts, metrics: Any
             ) -> tuple[dict[str, float], list[list[int]], list[tuple[int, float]]]:
    """The test split through the (restored) model: confusion-based metrics plus every registered metric, and
    each test image's (predicted class, top probability) in the split's order."""
    from zoo.engine.metrics import gather_outputs, test_metrics

    outputs: list = []
    from zoo.engine.ema import flip_average

    model = flip_average(parts.eval_model, run.config.tta)
    test_loss, _, confusion = evaluate(model, parts.pipeline.eval_batches("test"), len(run.classes),
                                       parts.device, parts.precision, parts.world, outputs)
    y_true, probs = gather_outputs(outputs, len(parts.pipeline.split.test), len(run.classes), parts.world,
                                    parts.device)
    top, label = probs.max(1)
    predictions = list(zip(label.tolist(), top.tolist()))
    return test_metrics(confusion, run.classes, test_loss, y_true, probs, metrics), confusion, predictions


# ------------------------------------------------------------------------------------------------- a run


def prepare(info: "ModelInfo", pipeline: "Pipeline", classes: list[str], config: TrainConfig,
            model: Optional["torch.nn.Module"], plugins: "Plugins", run_id: Optional[int],
            run_name: Optional[str], artifacts_dir: Optional[Path]) -> tuple[Run, Parts]:
    """Device and backend, the model placed, optimizer, schedule, loss, scaler and generator: a Run to train."""
    import torch

    from zoo.distributed import current
    from zoo.engine.losses import make_loss
    from zoo.engine.optim import make_optimizer, make_scheduler

    world = current()  # under torchrun: DDP, this rank's share of the data, sums over the ranks
    device = torch.device(config.device)
    setup_backend(device)
    if model is None:
        model = build_model(info, len(classes), config)
    model, step_model, eval_model = _place(model, config, device, world)
    optimizer = make_optimizer(model, config, plugins.components("optimizer"))
    batches = pipeline.batches_per_epoch()
    run = Run(run_id, run_name, model, config, artifacts_dir, classes, batches, optimizer=optimizer,
              scheduler=make_scheduler(optimizer, config, batches, plugins.components("schedule")),
              scaler=torch.amp.GradScaler(device.type) if config.precision == "fp16" else None,
              generator=torch.Generator().manual_seed(config.seed))
    parts = Parts(device, config.precision, world, step_model, eval_model,
                  make_loss(config, plugins.components("loss")), pipeline, optimizer.param_groups[0]["lr"])
    return run, parts


def builtin_callbacks(info: "ModelInfo", classes: list[str], config: TrainConfig, world: "World",
                      checkpoint_path: Optional[Path], plugins: "Plugins", listeners: Sequence[Any],
                      model: Optional["torch.nn.Module"] = None):
    """In order: early stopping, the NaN guard, the best weights, the --callback plugins, the weight EMA (--ema;
    it needs ``model``), last.pt, then the caller's callbacks (recorder, progress). The best-weights keeper is
    returned too (it restores them)."""
    from zoo.engine.checkpoints import BestCheckpoint, LastCheckpoint
    from zoo.engine.stopping import EarlyStopping, NanGuard

    best = BestCheckpoint(checkpoint_path, info, classes, config.image_size)
    table = plugins.components("callback")
    chosen = [table.check(name).builder(config) for name in config.callbacks]
    last = LastCheckpoint(checkpoint_path.with_name("last.pt") if checkpoint_path is not None else None, best)
    if config.ema and model is not None:
        from zoo.engine.ema import WeightEMA

        chosen.append(WeightEMA(model, config.ema))
    callbacks = [EarlyStopping(config.patience, config.min_delta, config.patience_lr),
                 NanGuard(config.precision, not world.launched), best, *chosen, last, *listeners]
    return CallbackList(callbacks), best, last


def run_epochs(run: Run, parts: Parts, callbacks: CallbackList, first: int) -> tuple[Optional[StopTraining], str]:
    """Epochs ``first``.. until a callback stops training or the last epoch ends: (the stop, if any, the reason)."""
    try:
        callbacks.call("on_train_start", run)
        for epoch in range(first, run.config.epochs + 1):
            callbacks.call("on_epoch_start", run, epoch)
            logs = train_one_epoch(run, parts, epoch, callbacks)
            callbacks.call("on_train_epoch_end", run, epoch, logs)
            val_loss, val_acc, _ = evaluate(parts.eval_model, parts.pipeline.eval_batches("val"), len(run.classes),
                                            parts.device, parts.precision, parts.world)
            logs.update(val_loss=val_loss, val_acc=val_acc, seconds=time.perf_counter() - logs.pop("started"))
            logs["val_accuracy"] = logs[VAL_ACC]
            run.history.append(EpochStats.from_logs(logs))
            run.epoch = epoch
            # last.pt is written before the recorder writes the epoch's history: a Ctrl-C between the two left a
            # last.pt one epoch ahead of the history, and the resumed run's history missed that epoch
            with signals_after():
                callbacks.call("on_epoch_end", run, epoch, logs)
    except StopTraining as stop:
        return stop, stop.reason
    return None, StopReason.MAX_EPOCHS.value


def train(info: "ModelInfo", pipeline: "Pipeline", classes: list[str], spec: Union[RunSpec, TrainConfig],
          resolved: Optional[Resolved] = None, callbacks: Union[Callbacks, Sequence[Any], None] = None,
          checkpoint_path: Optional[Path] = None, model: Optional["torch.nn.Module"] = None,
          resume: Optional[dict] = None, *, plugins: Optional["Plugins"] = None, run_id: Optional[int] = None,
          run_name: Optional[str] = None) -> TrainResult:
    """Train ``info``'s architecture on the pipeline's train split with early stopping on validation loss,
    restore the best weights, evaluate on the test split. A NaN/inf loss returns status 'failed'; Ctrl-C
    (KeyboardInterrupt) propagates after the best checkpoint so far has been written.

    ``callbacks``: a ``Callbacks`` display, or a list of callbacks (called after the built-ins). With a
    ``checkpoint_path``, ``last.pt`` beside it holds everything needed to go on after epoch k (written each epoch,
    removed once the run has ended); ``resume`` is such a file's content: training goes on from epoch k + 1
    exactly as it would have."""
    from zoo.engine.checkpoints import restore_run

    if plugins is None:
        from zoo.plugins import get_plugins

        plugins = get_plugins()
    config = spec if isinstance(spec, TrainConfig) else resolve_config(spec, resolved, plugins)
    listeners = [Progress(callbacks or Callbacks())] if not isinstance(callbacks, (list, tuple)) else callbacks
    run, parts = prepare(info, pipeline, classes, config, model, plugins, run_id, run_name,
                         checkpoint_path.parent if checkpoint_path is not None else None)
    run.callbacks, best, last = builtin_callbacks(info, classes, config, parts.world, checkpoint_path, plugins,
                                                  listeners, run.model)
    first = restore_run(run, resume) if resume is not None else 1
    if resume is not None:
        parts.lr = run.optimizer.param_groups[0]["lr"]
    stop, reason = run_epochs(run, parts, run.callbacks, first)
    status = stop.status if stop is not None else Status.COMPLETED
    result = TrainResult(status, reason, len(run.history), best.best_epoch, best.checkpoint,
                         error=stop.error if stop is not None else None, history=run.history)
    if status == Status.COMPLETED:
        best.restore(run.model)
        result.metrics, result.confusion, result.predictions = test_run(run, parts, plugins.components("metric"))
    run.callbacks.call("on_train_end", run, result)
    return result


def resolve_config(spec: RunSpec, resolved: Optional[Resolved], plugins: "Plugins") -> TrainConfig:
    """The run's TrainConfig, with the option defaults its optimizer, schedule, loss and callbacks declare."""
    from zoo.components import option_defaults

    if resolved is None:
        raise TypeError("train() needs the Resolved device, precision and image size with a RunSpec")
    full = spec.with_recipe()
    parts = [plugins.components("optimizer").check(str(full.optimizer)),
             plugins.components("schedule").check(str(full.schedule)),
             plugins.components("loss").check(full.loss or "cross_entropy")]
    parts += [plugins.components("callback").check(name) for name in full.callbacks]
    return TrainConfig.resolve(spec, resolved, option_defaults(parts))


__all__ = ["EpochStats", "TrainResult", "build_model", "train", "train_one_epoch", "evaluate", "resolve_config"]
