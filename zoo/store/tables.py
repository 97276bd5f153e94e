"""Light Core views (``sqlalchemy.table``) of the tables in zoo.store.schema, for the read path.

The read-only commands query through these so that they never import ``sqlalchemy.orm`` (about 90 ms of CLI
start-up, a third of the speed budget in BENCHMARKS.md). Writes and migrations use the declarative
classes in schema.py; tests/test_store.py checks that both describe the same columns with the same types.
"""

from __future__ import annotations

from sqlalchemy import JSON, DateTime, Float, Integer, LargeBinary, String, Text, column, table

Json = JSON(none_as_null=True)

runs = table(
    "runs",
    column("id", Integer), column("uuid", String), column("name", String), column("model", String),
    column("plugin", String), column("status", String), column("created", DateTime), column("started", DateTime),
    column("finished", DateTime), column("heartbeat", DateTime), column("host", String), column("pid", Integer),
    column("zoo_version", String), column("torch_version", String), column("torchvision_version", String),
    column("python_version", String), column("device", String), column("dataset_path", Text),
    column("dataset_fingerprint", String), column("split_fingerprint", String), column("classes", Json),
    column("train_size", Integer), column("val_size", Integer), column("test_size", Integer),
    column("best_epoch", Integer), column("epochs_run", Integer), column("stop_reason", String),
    column("checkpoint", Text), column("error", Text), column("confusion", Json),
)
params = table("params", column("run_id", Integer), column("key", String), column("value", Text))
history = table("history", column("run_id", Integer), column("key", String), column("epoch", Integer),
                column("value", Float))
metrics = table("metrics", column("run_id", Integer), column("key", String), column("value", Float))
tags = table("tags", column("run_id", Integer), column("key", String), column("value", Text))
evaluations = table(
    "evaluations",
    column("id", Integer), column("run_id", Integer), column("created", DateTime), column("dataset", Text),
    column("dataset_fingerprint", String), column("classes", Json), column("confusion", Json),
    column("metrics", Json),
)
predictions = table("predictions", column("run_id", Integer), column("format", Integer), column("count", Integer),
                    column("data", LargeBinary))
counters = table("counters", column("name", String), column("value", Integer))
schema_migrations = table("schema_migrations", column("version", Integer), column("name", String),
                          column("applied", DateTime))

ALL = (runs, params, history, metrics, tags, evaluations, predictions, counters, schema_migrations)
RUN_COLUMNS = tuple(c.name for c in runs.columns)
