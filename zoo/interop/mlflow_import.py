"""``zoo import --from-mlflow URI``: MLflow runs as zoo import records (zoo.store.bulk), read with MLflow's client.

What maps to what: an MLflow run's id is the zoo run's uuid (so importing again skips it); its name the zoo name;
params the zoo params (numbers, booleans and JSON read back as such); metrics whose key starts with ``test_``
the test metrics (their last value); every other metric the per-epoch history (step N is epoch N, or N+1 where
steps start at 0); tags the tags (MLflow's own ``mlflow.*`` tags left out, the experiment kept as
``mlflow.experiment``); FINISHED/FAILED/KILLED -> completed/failed/interrupted (runs still RUNNING are left
out). The model is the run's ``model`` param or tag, else the experiment's name.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from zoo.errors import ZooError

STATUSES = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted"}
PAGE = 1000


def client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ZooError("zoo import --from-mlflow needs MLflow's client, an optional extra: "
                       "pip install 'zoo-vision[mlflow]'") from None
    return MlflowClient(tracking_uri=uri)


def records(uri: str, experiment: Optional[str] = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each finished run of the store (of one experiment when named)."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    mlflow = client(uri)
    try:
        experiments = mlflow.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    except MlflowException as exc:
        raise ZooError(f"Cannot read the MLflow store {uri}: {str(exc).splitlines()[0]}") from None
    if experiment is not None:
        chosen = [e for e in experiments if e.name == experiment]
        if not chosen:
            names = ", ".join(sorted(e.name for e in experiments)) or "none"
            raise ZooError(f"No MLflow experiment '{experiment}' in {uri} (experiments: {names}).")
        experiments = chosen
    for exp in experiments:
        token = None
        while True:
            page = mlflow.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                                      page_token=token)
            for run in page:
                record = to_record(mlflow, run, exp.name)
                if record is not None:
                    yield f"MLflow run {run.info.run_id} ({exp.name})", record
            token = page.token
            if not token:
                break


def to_record(mlflow: Any, run: Any, experiment: str) -> Optional[dict[str, Any]]:
    status = STATUSES.get(run.info.status)
    if status is None:
        return None  # still running or scheduled
    params = {key: _value(text) for key, text in run.data.params.items()}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    tags["mlflow.experiment"] = experiment
    metrics, history = {}, {}
    for key, last in run.data.metrics.items():
        if key.startswith("test_"):
            metrics[key] = last
            continue
        points = mlflow.get_metric_history(run.info.run_id, key)
        shift = 1 if any(p.step == 0 for p in points) else 0
        by_epoch = {}
        for point in sorted(points, key=lambda p: (p.step, p.timestamp)):
            if point.step + shift >= 1:
                by_epoch[point.step + shift] = point.value  # the last value logged at a step
        history[key] = [[epoch, value] for epoch, value in sorted(by_epoch.items())]
    model = params.pop("model", None) or tags.get("model") or experiment
    return {
        "uuid": run.info.run_id, "name": run.info.run_name or None, "model": str(model), "status": status,
        "params": params, "tags": tags, "metrics": metrics, "history": history, "plugin": "mlflow",
        "started": run.info.start_time / 1000 if run.info.start_time else None,
        "finished": run.info.end_time / 1000 if run.info.end_time else None,
    }


def _value(text: str) -> Any:
    """An MLflow param (always text) as the value it spells: 0.01, 3, true, [1, 2]; other text as it is."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return {"True": True, "False": False, "None": None}.get(text, text)
    return value if isinstance(value, (int, float, bool, list)) or value is None else text
