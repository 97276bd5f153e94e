"""The registry's tables, as SQLAlchemy 2.x declarative classes.

History, metrics, params and tags are long form (one row per key), as MLflow stores them, so a new metric or
option needs no schema change. Timestamps are naive UTC. Deleting a run deletes its rows in every other table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSON columns store SQL NULL for None, so "no confusion matrix" reads back as None.
Json = JSON(none_as_null=True)


class Base(DeclarativeBase):
    pass


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.id", ondelete="CASCADE")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # short and typeable: `zoo show 12`
    uuid: Mapped[str] = mapped_column(String(32), unique=True)  # globally unique across registries
    name: Mapped[Optional[str]] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200), index=True)
    plugin: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)  # running | completed | failed | interrupted
    created: Mapped[datetime] = mapped_column(DateTime, index=True)
    started: Mapped[Optional[datetime]] = mapped_column(DateTime)
    finished: Mapped[Optional[datetime]] = mapped_column(DateTime)
    heartbeat: Mapped[Optional[datetime]] = mapped_column(DateTime)
    host: Mapped[Optional[str]] = mapped_column(String(255))
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    zoo_version: Mapped[Optional[str]] = mapped_column(String(50))
    torch_version: Mapped[Optional[str]] = mapped_column(String(50))
    torchvision_version: Mapped[Optional[str]] = mapped_column(String(50))
    python_version: Mapped[Optional[str]] = mapped_column(String(50))
    device: Mapped[Optional[str]] = mapped_column(String(50))
    dataset_path: Mapped[Optional[str]] = mapped_column(Text)
    dataset_fingerprint: Mapped[Optional[str]] = mapped_column(String(128))
    split_fingerprint: Mapped[Optional[str]] = mapped_column(String(128))
    classes: Mapped[Optional[list[str]]] = mapped_column(Json)
    train_size: Mapped[Optional[int]] = mapped_column(Integer)
    val_size: Mapped[Optional[int]] = mapped_column(Integer)
    test_size: Mapped[Optional[int]] = mapped_column(Integer)
    best_epoch: Mapped[Optional[int]] = mapped_column(Integer)
    epochs_run: Mapped[Optional[int]] = mapped_column(Integer)
    stop_reason: Mapped[Optional[str]] = mapped_column(String(50))
    checkpoint: Mapped[Optional[str]] = mapped_column(Text)
    error: Mapped[Optional[str]] = mapped_column(Text)
    confusion: Mapped[Optional[list[list[int]]]] = mapped_column(Json)  # [true][pred], in the order of classes


class Param(Base):
    """One resolved option of a run; the value is JSON text so int/float/bool/str/None/list round-trip."""

    __tablename__ = "params"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class HistoryPoint(Base):
    """One value of one key at one epoch (epochs start at 1). The primary key is the (run, key, epoch) index."""

    __tablename__ = "history"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[Optional[float]] = mapped_column(Float)  # None where the value was NaN or infinite


class Metric(Base):
    """A final test metric of a run (test_accuracy, test_f1, 'test_f1/<class>', ...)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_key_value", "key", "value"),)

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Optional[float]] = mapped_column(Float)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (Index("ix_tags_key_value", "key", "value"),)

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Evaluation(Base):
    """An extra evaluation of a run's checkpoint (zoo evaluate); never overwrites the run's own test metrics."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(_run_fk(), index=True)
    created: Mapped[datetime] = mapped_column(DateTime)
    dataset: Mapped[str] = mapped_column(Text)
    dataset_fingerprint: Mapped[Optional[str]] = mapped_column(String(128))
    classes: Mapped[list[str]] = mapped_column(Json)
    confusion: Mapped[Optional[list[list[int]]]] = mapped_column(Json)
    metrics: Mapped[dict[str, Any]] = mapped_column(Json)


class Prediction(Base):
    """A run's test predictions, one compressed blob (zoo.predictions: image index, true and predicted class, top
    probability of each test image): a few KB a run, where one row an image would multiply the registry."""

    __tablename__ = "predictions"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    format: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Counter(Base):
    """A named counter; 'runs' holds the highest run id ever issued, so a deleted run's id is never reused."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class SchemaMigration(Base):
    """One applied migration; the highest version is the schema version of the file."""

    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    applied: Mapped[datetime] = mapped_column(DateTime)


runs = Run.__table__
params = Param.__table__
history = HistoryPoint.__table__
metrics = Metric.__table__
tags = Tag.__table__
evaluations = Evaluation.__table__
counters = Counter.__table__
predictions = Prediction.__table__
schema_migrations = SchemaMigration.__table__

RUN_COLUMNS = tuple(c.name for c in runs.columns)
