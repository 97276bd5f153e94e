"""Soft delete: ``zoo delete`` moves runs to a trash, ``zoo restore`` brings them back, ``zoo gc`` empties it.

A deleted run keeps its rows; a row in the ``trash`` table (schema version 3) marks it, and its artifacts folder
``run-<id>`` moves to ``<artifacts>/.trash/run-<id>``. Every read (list-runs, compare, plot, report, the ui) leaves
trashed runs out unless asked for them (``RunFilter.deleted``); ``gc`` deletes them for good, rows and zoo's own
files. Run ids are never reused: the trashed rows stay, and the id counter covers purged ones.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from sqlalchemy import Connection, delete, exists, insert, inspect, select

from zoo.errors import ZooError
from zoo.store import tables
from zoo.store.views import utcnow

if TYPE_CHECKING:
    from zoo.store.registry import Deleted, Registry

TRASH_FOLDER = ".trash"
r, tr = tables.runs, tables.trash


def has_table(conn: Connection) -> bool:
    """Whether the registry has the trash table (older registries, read as they are, have none)."""
    if conn.info.get("zoo_trash_table"):
        return True
    found = inspect(conn).has_table("trash")
    if found:
        conn.info["zoo_trash_table"] = True  # a table once made stays; its absence is checked again
    return found


def has_trash(conn: Connection) -> bool:
    """Whether this registry has runs in the trash."""
    return has_table(conn) and conn.scalar(select(tr.c.run_id).limit(1)) is not None


def visibility(conn: Connection, deleted: Optional[bool]):
    """The clause that keeps trashed runs out (``deleted`` False), only them (True), or None: no clause needed."""
    if deleted is None or not has_trash(conn):
        return None if not deleted else r.c.id.in_([])
    trashed = exists().where(tr.c.run_id == r.c.id)
    return trashed if deleted else ~trashed


def trashed_ids(conn: Connection, ids: Iterable[int]) -> dict[int, datetime]:
    """Of these runs, those in the trash, with when they were deleted."""
    ids = [int(i) for i in ids]
    if not ids or not has_table(conn):
        return {}
    return dict(conn.execute(select(tr.c.run_id, tr.c.deleted_at).where(tr.c.run_id.in_(ids))).all())


def trash_folder(reg: "Registry") -> Path:
    return reg.artifacts_dir / TRASH_FOLDER


@dataclass
class Moved:
    runs: list[int] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # artifacts folders moved (into or out of the trash)


def trash_runs(reg: "Registry", run_ids: Iterable[int]) -> Moved:
    """Mark runs deleted and move their artifacts folders into the trash folder (zoo's own folders only)."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    now = utcnow()
    schema_trash = _schema().trash

    def write(conn: Connection) -> list[int]:  # through commit: waits out another writer's lock, as delete did
        have = set(conn.scalars(select(r.c.id).where(r.c.id.in_(ids))))
        already = set(trashed_ids(conn, ids))
        todo = [i for i in ids if i in have and i not in already]
        if todo:
            conn.execute(insert(schema_trash), [{"run_id": i, "deleted_at": now} for i in todo])
        return todo

    todo = reg.commit(write)
    moved = Moved(runs=todo)
    for run_id in todo:
        source = reg.run_artifacts_dir(run_id)
        if _own_folder(reg, source):
            target = trash_folder(reg) / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace(source, target)
            moved.folders.append(target)
    return moved


def restore_runs(reg: "Registry", run_ids: Iterable[int]) -> Moved:
    """Take runs out of the trash, their artifacts folders back where they were."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))

    def write(conn: Connection) -> list[int]:
        todo = [i for i in ids if i in trashed_ids(conn, ids)]
        conn.execute(delete(_schema().trash).where(_schema().trash.c.run_id.in_(todo)))
        return todo

    todo = reg.commit(write)
    moved = Moved(runs=todo)
    for run_id in todo:
        target = reg.run_artifacts_dir(run_id)
        source = trash_folder(reg) / target.name
        if source.is_dir() and not source.is_symlink() and not target.exists():
            _replace(source, target)
            moved.folders.append(target)
    return moved


def purge(reg: "Registry", *, older_than: Optional[datetime] = None) -> tuple[list[int], "Deleted"]:
    """Delete for good the trashed runs deleted before ``older_than`` (all of them when None): their rows and
    zoo's own files in their trashed artifacts folders."""
    with reg.connect() as conn:
        if not has_table(conn):
            ids: list[int] = []
        else:
            stmt = select(tr.c.run_id).order_by(tr.c.run_id)
            if older_than is not None:
                stmt = stmt.where(tr.c.deleted_at < older_than)
            ids = list(conn.scalars(stmt))
    done = reg.delete_runs(ids, folder=lambda run_id: trash_folder(reg) / f"run-{run_id}")
    return ids, done


def _own_folder(reg: "Registry", folder: Path) -> bool:
    """A real folder directly inside this registry's artifacts folder (never a link to the user's files)."""
    try:
        return folder.is_dir() and not folder.is_symlink() and \
            folder.resolve().parent == reg.artifacts_dir.resolve()
    except OSError:
        return False


def _replace(source: Path, target: Path) -> None:
    if target.exists():
        raise ZooError(f"Cannot move {source} to {target}: something is already there. Move it away, then rerun.")
    try:
        source.rename(target)
    except OSError:
        shutil.move(str(source), str(target))  # another file system


def _schema():
    from zoo.store import schema

    return schema
