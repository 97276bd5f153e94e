"""zoo import --from-mlflow from a real MLflow SQLite store made here with MLflow's own client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="MLflow interop needs the mlflow extra: pip install 'zoo-vision[mlflow]'")
pytest.importorskip("alembic", reason="MLflow's SQLite store needs alembic (in the mlflow extra)")

from zoo.store import Registry  # noqa: E402


@pytest.fixture
def store(tmp_path):
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("pets", artifact_location=str(tmp_path / "mlartifacts"))
    other = client.create_experiment("other", artifact_location=str(tmp_path / "mlartifacts2"))
    runs = {}
    for name, status, lr, acc in (("base", "FINISHED", "0.01", 0.9), ("boom", "FAILED", "0.1", None),
                                  ("stopped", "KILLED", "0.001", None), ("live", "RUNNING", "0.5", None)):
        run = client.create_run(exp, run_name=name, tags={"owner": "alice"})
        run_id = run.info.run_id
        metrics = [Metric("val_loss", 1.0 / (step + 1), 1000 + step, step) for step in range(3)]
        metrics += [Metric("train_loss", 2.0 / (step + 1), 1000 + step, step) for step in range(3)]
        if acc is not None:
            metrics.append(Metric("test_accuracy", acc, 2000, 0))
        client.log_batch(run_id, metrics=metrics, params=[Param("lr", lr), Param("model", "resnet18"),
                                                           Param("optimizer", "sgd"), Param("pretrained", "True")],
                         tags=[RunTag("stage", "dev")])
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        runs[name] = run_id
    elsewhere = client.create_run(other, run_name="elsewhere")
    client.set_terminated(elsewhere.info.run_id)
    return uri, runs


def test_import_brings_params_metric_histories_tags_and_status(cli, store):
    uri, runs = store
    result = cli("import", "--from-mlflow", uri, "--experiment", "pets")
    assert result.exit_code == 0 and "Imported 3 runs" in result.stdout, result.output
    with Registry.open(os.environ["ZOO_REGISTRY"], readonly=True) as reg:
        base = reg.get_run(runs["base"])
        history = reg.history(base.id)
        failed, killed = reg.get_run(runs["boom"]), reg.get_run(runs["stopped"])
    assert base.uuid == runs["base"] and base.name == "base" and base.model == "resnet18" and base.status == "completed"
    assert base.params == {"lr": 0.01, "optimizer": "sgd", "pretrained": True}
    assert base.metrics == {"test_accuracy": 0.9}
    assert history["val_loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]  # steps 0..2 are epochs 1..3
    assert base.best_epoch == 3 and base.epochs_run == 3
    assert base.tags == {"owner": "alice", "stage": "dev", "mlflow.experiment": "pets"}
    assert failed.status == "failed" and killed.status == "interrupted"
    ranked = json.loads(cli("compare", "--where", "lr = 0.01 and tag.owner = alice", "--format", "json").stdout)
    assert [r["uuid"] if "uuid" in r else r["id"] for r in ranked] == [base.id]

    again = cli("import", "--from-mlflow", uri)  # every experiment: only the new one comes in
    assert again.exit_code == 0 and "Imported 1 run" in again.stdout and "3 already in the registry" in again.stdout

    unknown = cli("import", "--from-mlflow", uri, "--experiment", "nope")
    assert unknown.exit_code == 1 and "No MLflow experiment 'nope'" in unknown.output and "pets" in unknown.output


def test_the_mlflow_and_tensorboard_callbacks_log_a_run(tmp_path):
    """Called as the engine's callback hook will call them (it is not in zoo yet): an MLflow run, event files."""
    import importlib
    import sys
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).parents[1]))
    loggers = importlib.import_module("plugins.loggers")
    run = SimpleNamespace(id=7, model="tinycnn", params={"lr": 0.01, "epochs": 2})
    result = SimpleNamespace(status="completed", metrics={"test_accuracy": 0.75})
    uri = f"sqlite:///{tmp_path / 'logged.db'}"
    callbacks = [loggers.MLflowLogger(uri, experiment="zoo-runs")]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(loggers.TensorBoardLogger(tmp_path / "tb"))
    for callback in callbacks:
        callback.on_train_start(run)
        for epoch in (1, 2):
            callback.on_epoch_end(run, epoch, {"train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "note": "x"})
        callback.on_train_end(run, result)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("zoo-runs").experiment_id])
    assert logged.info.status == "FINISHED" and logged.data.params["lr"] == "0.01"
    assert logged.data.tags["zoo.run_id"] == "7" and logged.data.metrics["test_accuracy"] == 0.75
    assert [(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, "val_loss")] == [(1, 1.2), (2, 0.6)]
    if len(callbacks) > 1:
        events = list((tmp_path / "tb" / "run-7-tinycnn").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(events[0].parent))
        acc.Reload()
        assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val_loss")] == [(1, 1.2), (2, 0.6)]


def test_zoo_train_with_the_mlflow_and_tensorboard_callbacks(cli, make_images, tmp_path):
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    data = make_images({"cat": 6, "dog": 6}, size=16)
    uri = f"sqlite:///{tmp_path / 'trained.db'}"
    result = cli("train", "tinycnn", "--data", data, "--epochs", "2", "--image-size", "16", "--batch-size", "8",
                 "--callback", "mlflow", "--callback", "tensorboard", "--opt", f"mlflow_uri={uri}",
                 "--opt", f"tensorboard_dir={tmp_path / 'tb'}")
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("zoo").experiment_id])
    assert logged.info.status == "FINISHED" and logged.data.tags["model"] == "tinycnn"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_loss")] == [1, 2]
    assert "test_accuracy" in logged.data.metrics
    assert list((tmp_path / "tb").glob("run-*-tinycnn/events.out.tfevents.*"))
