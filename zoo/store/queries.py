"""Read queries behind list-runs, show and compare: indexed Core queries, limited to the runs shown.

Nothing here reads a history row that is not displayed: lists get the best val loss by an aggregate; compare
reads no history (the CLI reads the train/val loss of the ranked runs only when their sparklines are shown).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, Sequence

from sqlalchemy import Connection, and_, exists, func, select

from zoo.errors import UnknownName, ZooError
from zoo.store import tables
from zoo.vocab import GROUP_TAG, LOSS_KEYS, NO_DIRECTIONS, SYSTEM_TAG_PREFIX, lower_is_better, metric_order  # noqa: F401 (LOSS_KEYS, lower_is_better: used as queries.*)
from zoo.store.views import EvaluationView, RunView, decode_param, stale_reason, utcnow

r, m, h, p, t, ev = tables.runs, tables.metrics, tables.history, tables.params, tables.tags, tables.evaluations

# What `--metric NAME` means when NAME itself is not recorded.
METRIC_ALIASES = {
    "accuracy": "test_accuracy", "acc": "test_accuracy", "f1": "test_f1", "macro_f1": "test_f1",
    "precision": "test_precision", "recall": "test_recall", "loss": "test_loss",
}


def run_views(conn: Connection, ids: Sequence[int], *, host: str, full: bool = False) -> list[RunView]:
    """RunViews for these ids in this order, with metrics, tags and best val loss (and params, evaluations if full)."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    rows = {row.id: row for row in conn.execute(select(r).where(r.c.id.in_(ids)))}
    views = {i: RunView(**dict(rows[i]._mapping)) for i in ids if i in rows}
    for run_id, key, value in conn.execute(select(m.c.run_id, m.c.key, m.c.value).where(m.c.run_id.in_(ids))):
        views[run_id].metrics[key] = value
    for run_id, key, value in conn.execute(select(t.c.run_id, t.c.key, t.c.value).where(t.c.run_id.in_(ids))):
        view = views[run_id]
        (view.system_tags if key.startswith(SYSTEM_TAG_PREFIX) else view.tags)[key] = value
    for run_id, best in conn.execute(
        select(h.c.run_id, func.min(h.c.value)).where(h.c.run_id.in_(ids), h.c.key == "val_loss").group_by(h.c.run_id)
    ):
        views[run_id].best_val_loss = best
    mark_stale(conn, list(views.values()), host=host)
    if full:
        for run_id, key, value in conn.execute(
            select(p.c.run_id, p.c.key, p.c.value).where(p.c.run_id.in_(ids)).order_by(p.c.key)
        ):
            views[run_id].params[key] = decode_param(value)
        for row in conn.execute(select(ev).where(ev.c.run_id.in_(ids)).order_by(ev.c.id)):
            views[row.run_id].evaluations.append(EvaluationView(**dict(row._mapping)))
    return [views[i] for i in ids if i in views]


def mark_stale(conn: Connection, views: Iterable[RunView], *, host: str) -> None:
    running = [v for v in views if v.status == "running"]
    if not running:
        return
    longest = dict(
        conn.execute(
            select(h.c.run_id, func.max(h.c.value))
            .where(h.c.run_id.in_([v.id for v in running]), h.c.key == "seconds")
            .group_by(h.c.run_id)
        ).all()
    )
    now = utcnow()
    for view in running:
        epoch_s = longest.get(view.id)
        if epoch_s is None and view.epochs_run and view.started and view.heartbeat:
            epoch_s = (view.heartbeat - view.started).total_seconds() / view.epochs_run
        view.stale = stale_reason(view, epoch_s, now=now, host=host)


def histories(
    conn: Connection, ids: Sequence[int], keys: Optional[Iterable[str]] = None
) -> dict[int, dict[str, list[tuple[int, Optional[float]]]]]:
    """run id -> key -> [(epoch, value)], only for these runs (and these keys when given)."""
    ids = [int(i) for i in ids]
    out: dict[int, dict[str, list[tuple[int, Optional[float]]]]] = {i: {} for i in ids}
    if not ids:
        return out
    stmt = select(h.c.run_id, h.c.key, h.c.epoch, h.c.value).where(h.c.run_id.in_(ids))
    if keys is not None:
        stmt = stmt.where(h.c.key.in_(list(keys)))
    for run_id, key, epoch, value in conn.execute(stmt.order_by(h.c.run_id, h.c.key, h.c.epoch)):
        out[run_id].setdefault(key, []).append((epoch, value))
    return out


def matching_models(conn: Connection, pattern: Optional[str]) -> Optional[list[str]]:
    """Model names recorded in the registry that match a shell-style pattern (None: no filter)."""
    if not pattern:
        return None
    names = conn.scalars(select(r.c.model).distinct())
    return [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]


@dataclass
class RunFilter:
    model: Optional[str] = None  # shell-style pattern
    status: Optional[str] = None  # running | stale | completed | failed | interrupted
    tags: list[tuple[str, str]] = field(default_factory=list)
    since: Optional[datetime] = None  # naive UTC
    ids: Optional[list[int]] = None
    group: Optional[str] = None  # the zoo.group tag: every run of one `zoo train` command
    data: Optional[str] = None  # --data NAME|PATH|FINGERPRINT (see dataset_clause)
    fingerprint: Optional[str] = None  # exactly this dataset fingerprint ("": runs that recorded none)

    def where(self, conn: Connection) -> list:
        clauses: list = []
        if self.data is not None:
            clauses.append(dataset_clause(self.data))
        if self.fingerprint is not None:
            fp = r.c.dataset_fingerprint
            clauses.append(fp == self.fingerprint if self.fingerprint else fp.is_(None))
        models = matching_models(conn, self.model)
        if models is not None:
            clauses.append(r.c.model.in_(models))
        if self.status in ("running", "stale"):
            clauses.append(r.c.status == "running")
        elif self.status:
            clauses.append(r.c.status == self.status)
        for key, value in self.tags:
            clauses.append(exists().where(t.c.run_id == r.c.id, t.c.key == key, t.c.value == value))
        if self.group is not None:
            clauses.append(exists().where(t.c.run_id == r.c.id, t.c.key == GROUP_TAG, t.c.value == self.group))
        if self.since is not None:
            clauses.append(r.c.created >= self.since)
        if self.ids is not None:
            clauses.append(r.c.id.in_(self.ids))
        return clauses


def dataset_clause(value: str):
    """Runs trained on the dataset ``--data`` names: a dataset name or the --data text as given at training
    (any case), a folder (as given, or the path it resolves to here), or a prefix (4+ hex digits) of its
    fingerprint."""
    import json
    import os
    import re
    from pathlib import Path

    from sqlalchemy import or_

    text = value.strip()
    path = Path(text).expanduser()
    options = [
        r.c.dataset_path == text, r.c.dataset_path == os.path.abspath(path),
        exists().where(p.c.run_id == r.c.id, p.c.key == "data", func.lower(p.c.value) == json.dumps(text).lower()),
        func.lower(r.c.dataset_path).endswith(f"/datasets/{text.lower()}", autoescape=True),  # a dataset plugin's
    ]
    if path.exists():
        options.append(r.c.dataset_path == str(path.resolve()))
    if re.fullmatch(r"[0-9a-fA-F]{4,}", text):
        options.append(r.c.dataset_fingerprint.startswith(text.lower(), autoescape=True))
    return or_(*options)


@dataclass
class DatasetGroup:
    """Runs of one dataset among those a comparison would rank: its fingerprint (None: not recorded), the
    folders it was read from, and how many runs."""

    fingerprint: Optional[str]
    paths: list[str]
    runs: int


def dataset_groups(conn: Connection, metric: str, flt: RunFilter) -> list[DatasetGroup]:
    """The datasets of the runs that have ``metric`` and pass ``flt``, the one with most runs first."""
    key = resolve_metric(conn, metric)
    rows = conn.execute(
        select(r.c.dataset_fingerprint, r.c.dataset_path, func.count())
        .select_from(r).join(m, and_(m.c.run_id == r.c.id, m.c.key == key))
        .where(m.c.value.is_not(None), *flt.where(conn))
        .group_by(r.c.dataset_fingerprint, r.c.dataset_path)
    )
    groups: dict[Optional[str], DatasetGroup] = {}
    for fingerprint, path, count in rows:
        group = groups.setdefault(fingerprint, DatasetGroup(fingerprint, [], 0))
        group.runs += count
        if path and path not in group.paths:
            group.paths.append(path)
    return sorted(groups.values(), key=lambda g: (-g.runs, g.fingerprint or ""))


def list_runs(
    conn: Connection, flt: RunFilter, *, limit: Optional[int], host: str
) -> tuple[list[RunView], int]:
    """Runs matching the filter, newest first, at most ``limit``; and how many match in all."""
    clauses = flt.where(conn)
    if flt.status in ("running", "stale"):
        # Whether a running run is stale is decided in Python: running runs are few, so filter them all here.
        ids = list(conn.scalars(select(r.c.id).where(*clauses).order_by(r.c.id.desc())))
        views = [v for v in run_views(conn, ids, host=host) if v.display_status == flt.status]
        return (views[:limit] if limit else views), len(views)
    total = conn.scalar(select(func.count()).select_from(r).where(*clauses)) or 0
    stmt = select(r.c.id).where(*clauses).order_by(r.c.id.desc())
    if limit:
        stmt = stmt.limit(limit)
    return run_views(conn, list(conn.scalars(stmt)), host=host), total


def has_metrics(conn: Connection) -> bool:
    return conn.scalar(select(m.c.run_id).limit(1)) is not None


def metric_keys(conn: Connection) -> list[str]:
    return list(conn.scalars(select(m.c.key).distinct().order_by(m.c.key)))


def resolve_metric(conn: Connection, name: str) -> str:
    """The recorded metric key that ``--metric NAME`` means, or an error listing the metrics that exist."""
    candidates = [name, METRIC_ALIASES.get(name.lower(), ""), f"test_{name}"]
    if name.startswith("test_"):
        candidates.append(METRIC_ALIASES.get(name[5:].lower(), ""))
    for key in dict.fromkeys(c for c in candidates if c):
        if conn.scalar(select(m.c.key).where(m.c.key == key).limit(1)) is not None:
            return key
    keys = metric_keys(conn)
    if not keys:
        raise UnknownName(f"Unknown metric '{name}': no run in this registry has test metrics yet.")
    overall = [k for k in keys if "/" not in k]
    per_class = sorted({k.split("/", 1)[0] + "/<class>" for k in keys if "/" in k})
    raise UnknownName(
        f"Unknown metric '{name}'. Metrics recorded: {', '.join(overall + per_class)} "
        "(accuracy, f1, precision, recall and loss mean the test_ ones)."
    )


def resolve_param(conn: Connection, name: str) -> str:
    """The params key ``--by NAME`` means (dashes read as underscores), or an error listing the recorded ones."""
    for key in dict.fromkeys((name, name.replace("-", "_"))):
        if conn.scalar(select(p.c.key).where(p.c.key == key).limit(1)) is not None:
            return key
    keys = list(conn.scalars(select(p.c.key).distinct().order_by(p.c.key)))
    raise UnknownName(f"Unknown --by '{name}': use --by model or --by PARAM, a recorded param "
                      f"({', '.join(keys) or 'none yet'}).")


@dataclass
class Comparison:
    metric: str
    lower_is_better: bool
    runs: list[RunView]  # ranked, best first; run.metrics[metric] is the value ranked on
    total: int  # runs that have the metric and pass the filters (before --top)
    other_metrics: list[str]  # the other overall (not per-class) metrics of the ranked runs
    differing_params: dict[str, dict[int, Any]]  # key -> run id -> value, only keys whose values differ
    missing: list[RunView] = field(default_factory=list)  # runs asked for by id that lack the metric
    dataset_fingerprints: list[str] = field(default_factory=list)  # distinct ones, when more than one
    split_fingerprints: list[str] = field(default_factory=list)


_MISSING = object()


def compare(
    conn: Connection, metric: str, flt: RunFilter, *, by: Optional[str] = None, top: Optional[int], host: str,
    directions: Mapping[str, bool] = NO_DIRECTIONS,
) -> Comparison:
    """Runs ranked by ``metric``, best first. ``by``: keep the best run of each model ('model') or of each value
    of a param ('lr', 'seed'...); runs without that param are left out. ``directions``: registered metrics'
    higher_is_better (``zoo.vocab.lower_is_better``)."""
    key = resolve_metric(conn, metric)
    lower = lower_is_better(key, directions)
    order = m.c.value.asc() if lower else m.c.value.desc()
    clauses = flt.where(conn)
    if flt.status in ("running", "stale"):
        raise ZooError("compare ranks finished runs: use --status completed, failed or interrupted.")
    if by:
        base = (
            select(r.c.id.label("id"), m.c.value.label("value"))
            .join(m, and_(m.c.run_id == r.c.id, m.c.key == key))
            .where(m.c.value.is_not(None), *clauses)
        )
        if by == "model":
            partition = r.c.model
        else:
            by = resolve_param(conn, by)
            base = base.join(p, and_(p.c.run_id == r.c.id, p.c.key == by))
            partition = p.c.value
        rank = func.row_number().over(partition_by=partition, order_by=(order, r.c.id.asc())).label("rank")
        sub = base.add_columns(rank).subquery()
        stmt = select(sub.c.id).where(sub.c.rank == 1)
        value = sub.c.value
        stmt = stmt.order_by(value.asc() if lower else value.desc(), sub.c.id.asc())
        total = conn.scalar(select(func.count()).select_from(sub).where(sub.c.rank == 1)) or 0
    else:
        stmt = (
            select(r.c.id).select_from(m).join(r, r.c.id == m.c.run_id)
            .where(m.c.key == key, m.c.value.is_not(None), *clauses)
            .order_by(order, m.c.run_id.asc())
        )
        counted = select(func.count()).select_from(m).where(m.c.key == key, m.c.value.is_not(None))
        if clauses:  # only then join the runs (a covering index scan of metrics counts the rest)
            counted = counted.where(m.c.run_id.in_(select(r.c.id).where(*clauses)))
        total = conn.scalar(counted) or 0
    if top:
        stmt = stmt.limit(top)
    ids = list(conn.scalars(stmt))
    views = run_views(conn, ids, host=host)

    missing: list[RunView] = []
    if flt.ids:
        ranked = set(ids)
        lacking = [i for i in flt.ids if i not in ranked]
        have = set(conn.scalars(select(m.c.run_id).where(m.c.run_id.in_(lacking), m.c.key == key,
                                                       m.c.value.is_not(None))))
        missing = run_views(conn, [i for i in lacking if i not in have], host=host)

    others = metric_order({k for v in views for k in v.metrics if "/" not in k and k != key}, list(directions))
    params: dict[int, dict[str, str]] = {i: {} for i in ids}
    for run_id, pkey, pvalue in conn.execute(select(p.c.run_id, p.c.key, p.c.value).where(p.c.run_id.in_(ids))):
        params[run_id][pkey] = pvalue
    differing: dict[str, dict[int, Any]] = {}
    if len(ids) > 1:
        for pkey in sorted({k for d in params.values() for k in d}):
            if len({params[i].get(pkey, _MISSING) for i in ids}) > 1:
                differing[pkey] = {i: decode_param(params[i][pkey]) if pkey in params[i] else None for i in ids}
    data_fps = sorted({v.dataset_fingerprint for v in views if v.dataset_fingerprint})
    split_fps = sorted({v.split_fingerprint for v in views if v.split_fingerprint})
    return Comparison(
        metric=key, lower_is_better=lower, runs=views, total=total, other_metrics=others,
        differing_params=differing, missing=missing,
        dataset_fingerprints=data_fps if len(data_fps) > 1 else [],
        split_fingerprints=split_fps if len(split_fps) > 1 else [],
    )



