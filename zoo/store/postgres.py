"""What a PostgreSQL registry needs beyond SQLAlchemy's defaults (``postgresql+psycopg://user@host/db``).

- Migrations: many processes may open a new database at once (a grid of workers starting together); the writing
  open takes a transaction-scoped advisory lock first, so one process applies them and the others then find them
  applied. SQLite gets the same effect from ``BEGIN IMMEDIATE``.
- Read-only opens: every transaction starts ``SET TRANSACTION READ ONLY``, so a read command cannot change
  anything, whatever it runs.
- Connection errors (wrong password, host or database) read as one line, with what to check.

Run ids need nothing here: ``rows.next_run_id`` updates the counter row first, which holds its row lock until the
transaction commits, and READ COMMITTED then sees the committed runs. Imports no driver: SQLAlchemy does that.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, Engine, event

# pg_advisory_xact_lock key of schema migrations: the first 8 bytes of sha1("zoo registry migrations"), signed.
MIGRATION_LOCK = 0x2F1C0B7A5E3D9A41


def configure(engine: Engine, *, readonly: bool) -> None:
    """Per-engine settings of a PostgreSQL registry (the engine is made with ``pool_pre_ping``)."""
    if readonly:

        @event.listens_for(engine, "begin")
        def _read_only(conn) -> None:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")


def lock_migrations(conn: Connection) -> None:
    """Inside the migrating transaction: wait for any other process migrating this database (released at commit).
    A no-op on other databases."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


def connection_lost(exc: BaseException) -> bool:
    """Whether a SQLAlchemy DBAPIError means the server connection went away or cannot be made now (a server
    restart, a network cut), so the write may be retried: SQLAlchemy's own disconnect test, or a driver
    OperationalError with no SQLSTATE (raised by the client) or of class 08 (connection) or 57P (shutdown)."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    if orig is None or not is_driver_error(orig) or not any(
            cls.__name__ == "OperationalError" for cls in type(orig).__mro__):
        return False
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state is None or state.startswith("08") or state.startswith("57P")


def is_driver_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("psycopg", "psycopg2", "pg8000", "asyncpg")


HINTS = (
    (re.compile(r"password authentication failed|no password supplied|authentication failed", re.I),
     "check the user and password in the URL"),
    (re.compile(r'database "[^"]*" does not exist', re.I), "create it (createdb NAME) or fix the database name"),
    (re.compile(r'role "[^"]*" does not exist', re.I), "check the user name in the URL"),
    (re.compile(r"connection refused|could not translate host name|no such file or directory|"
                r"timeout expired|name or service not known|could not connect", re.I),
     "check the host and port in the URL, and that the server is running"),
)


def message(exc: BaseException) -> str:
    """A driver error as one line: the server's own words (FATAL: ... without the socket details), plus a hint."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines) or type(exc).__name__
    fatal = re.search(r"(?:FATAL|ERROR):\s*(.*)", text)
    core = fatal.group(1) if fatal else re.sub(r"^connection failed:\s*", "", text)
    core = re.sub(r"\s*Is the server running.*$", "", core).rstrip(". ")
    for pattern, hint in HINTS:
        if pattern.search(text):
            return f"{core}: {hint}"
    return core
