"""Schema migrations: an ordered list of small functions, each recorded in ``schema_migrations`` once applied.

A writing open applies the missing ones in one ``BEGIN IMMEDIATE`` transaction, so several processes opening a
new registry at once create it exactly once. A fresh database gets the current tables from the first migration,
so every later migration must check before it alters (``add_column`` below does).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Connection, func, inspect, insert, select

from zoo.store import tables

Migration = Callable[[Connection], None]


def create_tables(conn: Connection) -> None:
    """Version 1: runs, params, history, metrics, tags, evaluations."""
    from zoo.store import schema

    schema.Base.metadata.create_all(conn, checkfirst=True)


def add_column(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """For later migrations: ALTER TABLE ... ADD COLUMN unless the column is already there."""
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {ddl_type}')


def run_id_counter(conn: Connection) -> None:
    """Version 2: a counter of the highest run id ever issued, so ids are never reused.

    It starts from the highest id any row still names: runs, and the rows of runs deleted before (a schema-1
    registry deleted through a URL, or by hand in the sqlite3 shell, kept their params, history, metrics, tags and
    evaluations, foreign keys being off there). Artifacts folders left behind are skipped when runs start."""
    from zoo.store import schema

    schema.counters.create(conn, checkfirst=True)
    if conn.scalar(select(schema.counters.c.value).where(schema.counters.c.name == "runs")) is None:
        ids = [select(func.max(schema.runs.c.id))] + [
            select(func.max(table.c.run_id))
            for table in (schema.params, schema.history, schema.metrics, schema.tags, schema.evaluations)
        ]
        highest = max((conn.scalar(query) or 0 for query in ids), default=0)
        conn.execute(insert(schema.counters).values(name="runs", value=highest))


def predictions_table(conn: Connection) -> None:
    """Version 3: each run's test predictions, one compressed blob a run (runs recorded before have none)."""
    from zoo.store import schema

    schema.predictions.create(conn, checkfirst=True)


# (version, name, function), in the order they are applied. Append only; never renumber.
MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "create_tables", create_tables),
    (2, "run_id_counter", run_id_counter),
    (3, "predictions_table", predictions_table),
]


# The oldest schema version the read-only commands can read as it is (version 2 only adds the run-id counter,
# which only writers use; version 3 the predictions table, which readers treat as empty when it is missing), so a
# read-only open of such a registry works without `zoo migrate`.
READABLE_FROM = 1


def latest_version() -> int:
    return max(version for version, _, _ in MIGRATIONS)


def applied_versions(conn: Connection) -> set[int]:
    return set(conn.scalars(select(tables.schema_migrations.c.version)))


def apply_pending(conn: Connection, applied: set[int]) -> list[int]:
    """Apply every migration not in ``applied`` (call inside a write transaction); returns the versions applied."""
    from zoo.store import schema

    if not applied:
        schema.schema_migrations.create(conn, checkfirst=True)
    done = []
    for version, name, function in MIGRATIONS:
        if version in applied:
            continue
        function(conn)
        conn.execute(
            insert(schema.schema_migrations).values(
                version=version, name=name, applied=datetime.now(timezone.utc).replace(tzinfo=None)
            )
        )
        done.append(version)
    return done
