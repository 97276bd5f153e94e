"""The training engine, one job per module (it imports no database or CLI code; torch only inside functions):

- ``config``: ``TrainConfig``, a run's options resolved once (spec + recipe), read by every later step
- ``device``: device, precision, autocast, backend set-up
- ``optim``, ``losses``, ``metrics``: the registered optimizers, schedules, losses and test metrics
- ``callbacks``: the ``Callback`` protocol, ``StopTraining``, ``Run``; ``stopping`` and ``checkpoints``: the
  built-in callbacks (early stopping, NaN guard, best/last checkpoints); ``ema``: the weight EMA (--ema) and the
  test-time flip (--tta)
- ``loop``: ``train_one_epoch``, ``evaluate`` and ``train``; ``lrfind``: the learning-rate range test
"""

from __future__ import annotations

from zoo.engine.callbacks import Callback, CallbackList, Callbacks, Progress, Run, StopTraining
from zoo.engine.config import TrainConfig
from zoo.engine.device import autocast, resolve_device, resolve_precision, seed_everything, setup_backend
from zoo.engine.loop import EpochStats, TrainResult, build_model, evaluate, resolve_config, train, train_one_epoch
from zoo.engine.lrfind import lr_range_test, suggest_lr
from zoo.engine.metrics import metrics_from_confusion
from zoo.engine.optim import lr_factor, make_optimizer, make_scheduler

__all__ = ["Callback", "CallbackList", "Callbacks", "EpochStats", "Progress", "Run", "StopTraining", "TrainConfig",
           "TrainResult", "autocast", "build_model", "evaluate", "lr_factor", "lr_range_test", "make_optimizer",
           "make_scheduler", "metrics_from_confusion", "resolve_config", "resolve_device", "resolve_precision",
           "seed_everything", "setup_backend", "suggest_lr", "train", "train_one_epoch"]
