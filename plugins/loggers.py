"""Training callbacks that mirror every zoo run to another tracker as it trains: MLflow and TensorBoard.

    zoo train tinycnn --data demo --callback mlflow --opt mlflow_uri=sqlite:///mlflow.db
    zoo train tinycnn --data demo --callback tensorboard --opt tensorboard_dir=tb

Each is a plain class with three of the engine's callback methods (``on_train_start(run)``,
``on_epoch_end(run, epoch, logs)``, ``on_train_end(run, result)``), registered below through
``register_callbacks``. What they read: ``run.id``, ``run.config`` (``config.model``: the architecture) (its fields are the params);
``logs`` a dict of per-epoch floats (train_loss, val_loss, ...); ``result.status`` and ``result.metrics``.

Rule of zoo plugins: no heavy import at the top; MLflow and TensorBoard are imported when a run starts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import zoo

STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def _params(run: Any) -> dict[str, Any]:
    """The run's settings: ``run.params`` where given, else the fields of its ``TrainConfig``."""
    import dataclasses

    params = getattr(run, "params", None)
    if params is None and dataclasses.is_dataclass(getattr(run, "config", None)):
        params = {f.name: getattr(run.config, f.name) for f in dataclasses.fields(run.config)}
    return dict(params or {})


def _model(run: Any) -> str:
    """The architecture's name: ``run.config.model`` in the engine (``run.model`` is the nn.Module there)."""
    name = getattr(getattr(run, "config", None), "model", None)
    return str(name if isinstance(name, str) else run.model)


def _result_parts(result: Any) -> tuple[str, dict[str, float]]:
    status = getattr(result, "status", None) or "completed"
    metrics = getattr(result, "metrics", None) or {}
    return str(getattr(status, "value", status)), _numbers(metrics)


class MLflowLogger:
    """Logs each zoo run to an MLflow tracking URI (default MLFLOW_TRACKING_URI): params at the start, the
    epoch values with step = epoch, the test metrics and the status at the end. Needs ``.[mlflow]``."""

    def __init__(self, tracking_uri: Optional[str] = None, experiment: str = "zoo"):
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.experiment = experiment
        self.client: Any = None
        self.run_ids: dict[int, str] = {}  # zoo run id -> MLflow run id

    def on_train_start(self, run: Any) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = self.client or MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        created = self.client.create_run(experiment_id, run_name=f"zoo-{run.id}",
                                         tags={"zoo.run_id": str(run.id), "model": _model(run)})
        self.run_ids[run.id] = created.info.run_id
        params = [Param(str(k), str(v)[:6000]) for k, v in _params(run).items() if k != "model"]
        params.append(Param("model", _model(run)))
        self.client.log_batch(created.info.run_id, params=params)

    def on_epoch_end(self, run: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(epoch)) for k, v in _numbers(logs).items()]
        if metrics:
            self.client.log_batch(self.run_ids[run.id], metrics=metrics)

    def on_train_end(self, run: Any, result: Any) -> None:
        from mlflow.entities import Metric

        import time

        mlflow_id = self.run_ids.pop(run.id)
        status, metrics = _result_parts(result)
        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(mlflow_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        self.client.set_terminated(mlflow_id, status=STATUS.get(status, "FINISHED"))


class TensorBoardLogger:
    """Writes TensorBoard event files, one folder per run (``<log_dir>/run-<id>-<model>``): each epoch's values as
    scalars at step = epoch, the test metrics at the end. Needs ``.[tensorboard]``."""

    def __init__(self, log_dir: str | os.PathLike = "tensorboard"):
        self.log_dir = Path(log_dir)
        self.writers: dict[int, Any] = {}

    def folder(self, run: Any) -> Path:
        return self.log_dir / f"run-{run.id}-{_model(run)}"

    def on_train_start(self, run: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(self.folder(run)))
        params = _params(run)
        if params:
            writer.add_text("params", "\n".join(f"{k} = {v}" for k, v in sorted(params.items())))
        self.writers[run.id] = writer

    def on_epoch_end(self, run: Any, epoch: int, logs: Mapping[str, Any]) -> None:
        writer = self.writers[run.id]
        for key, value in _numbers(logs).items():
            writer.add_scalar(key, value, int(epoch))

    def on_train_end(self, run: Any, result: Any) -> None:
        writer = self.writers.pop(run.id)
        status, metrics = _result_parts(result)
        for key, value in metrics.items():
            writer.add_scalar(key, value, 0)
        writer.add_text("status", status)
        writer.close()


@zoo.hookimpl
def register_callbacks(register):
    register("mlflow", lambda config: MLflowLogger(config.option("mlflow_uri") or None,
                                                   config.option("mlflow_experiment") or "zoo"),
             description="Log each run to MLflow as it trains (pip install 'zoo-vision[mlflow]').",
             options={"mlflow_uri": "", "mlflow_experiment": "zoo"})
    register("tensorboard", lambda config: TensorBoardLogger(config.option("tensorboard_dir") or "tensorboard"),
             description="Write TensorBoard event files per run (pip install 'zoo-vision[tensorboard]').",
             options={"tensorboard_dir": "tensorboard"})
