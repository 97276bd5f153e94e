"""What the web pages and ``zoo report`` read: the runs page query (filters, sort, page), run details, comparisons.

Reads only, through zoo.store (RunFilter, list_runs, run_views, histories, compare and the Core table views);
imports neither torch nor starlette, so ``zoo report`` uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, and_, func, select

from zoo.errors import ZooError
from zoo.vocab import ACCURACY, F1, LOSS, METRIC_ORDER, metric_key, metric_order
from zoo.store import queries, tables
from zoo.store.api import RunStore
from zoo.store.queries import RunFilter
from zoo.store.registry import RunView

r, m = tables.runs, tables.metrics

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE = 10**9  # a page number past this is past the end of any registry
# Sort keys of run columns; any other sort key is a recorded metric (test_accuracy, test_f1/cat, ...).
RUN_SORTS = {"id": r.c.id, "name": r.c.name, "model": r.c.model, "status": r.c.status, "started": r.c.created,
             "epochs": r.c.epochs_run}
METRIC_COLUMNS = tuple(metric_key(m) for m in (ACCURACY, F1, LOSS))  # shown on the runs page when recorded


@dataclass
class RunQuery:
    """What the runs page asks for: filters, sort and page (all from the URL, all validated here)."""

    model: str = ""
    status: str = ""
    tags: list[str] = field(default_factory=list)  # key=value
    group: str = ""
    dataset: str = ""  # as list-runs --data: a dataset name, a folder, or a fingerprint prefix
    since: str = ""
    where: str = ""  # a --where filter (zoo.store.where)
    deleted: bool = False  # the runs in the trash instead
    sort: str = "id"
    desc: bool = True
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE

    def run_filter(self) -> RunFilter:
        """The store's filter, built and checked as for `zoo list-runs` (same messages for a bad status or date).

        A group is whatever RunFilter.group means to the store (today the zoo.group tag of one `zoo train`
        command), so the pages and the report follow the store when it changes how groups are kept."""
        from zoo.filters import run_filter

        flt = run_filter(model=self.model or None, status=self.status or None, tag=self.tags,
                         since=self.since or None, group=self.group or None, data=self.dataset or None,
                         where=self.where or None)
        flt.deleted = self.deleted
        return flt

    @property
    def filtered(self) -> bool:
        return bool(self.model or self.status or self.tags or self.group or self.dataset or self.since or self.where)


@dataclass
class RunPage:
    runs: list[RunView]
    total: int  # runs matching the filters
    page: int
    pages: int
    metric_columns: list[str]


def run_page(conn: Connection, query: RunQuery, *, host: str) -> RunPage:
    """One page of the runs matching ``query``, sorted; only that page's runs are read in full."""
    flt = query.run_filter()
    clauses = flt.where(conn)
    per_page = max(1, min(int(query.per_page), max(PAGE_SIZES)))
    page = max(1, min(int(query.page), MAX_PAGE))  # beyond the last page: the last page (below)
    if flt.status in ("running", "stale"):
        # running runs are few, and stale is decided in Python: read them all, as list_runs does
        ids = list(conn.scalars(select(r.c.id).where(*clauses)))
        views = [v for v in queries.run_views(conn, ids, host=host) if v.display_status == flt.status]
        views.sort(key=lambda v: _sort_value(v, query.sort), reverse=query.desc)
        total = len(views)
        views = views[(page - 1) * per_page:page * per_page]
    else:
        total = conn.scalar(select(func.count()).select_from(r).where(*clauses)) or 0
        stmt = select(r.c.id).where(*clauses)
        column = RUN_SORTS.get(query.sort)
        if column is None:  # a metric: runs without it last, whatever the direction
            value = m.c.value
            stmt = stmt.select_from(r.outerjoin(m, and_(m.c.run_id == r.c.id, m.c.key == query.sort)))
            stmt = stmt.order_by(value.is_(None), value.desc() if query.desc else value.asc())
        else:
            stmt = stmt.order_by(column.is_(None), column.desc() if query.desc else column.asc())
        stmt = stmt.order_by(r.c.id.desc() if query.desc else r.c.id.asc())
        stmt = stmt.limit(per_page).offset((page - 1) * per_page)
        views = queries.run_views(conn, list(conn.scalars(stmt)), host=host)
    pages = max(1, -(-total // per_page))
    if page > pages and total:  # past the end (the registry shrank, or a hand-made URL): show the last page
        return run_page(conn, replace(query, page=pages), host=host)
    shown = {k for v in views for k in v.metrics}
    columns = [k for k in METRIC_COLUMNS if k in shown]
    if query.sort not in RUN_SORTS and query.sort not in columns:
        columns.append(query.sort)
    return RunPage(runs=views, total=total, page=page, pages=pages, metric_columns=columns)


def _sort_value(view: RunView, sort: str) -> tuple:
    if sort in RUN_SORTS:
        value = getattr(view, {"started": "created", "epochs": "epochs_run"}.get(sort, sort))
    else:
        value = view.metrics.get(sort)
    return (value is not None, value if value is not None else 0)


def filter_choices(conn: Connection) -> dict[str, list[str]]:
    """Values offered by the runs page's filter and sort menus (distinct models and metric keys)."""
    return {
        "models": list(conn.scalars(select(r.c.model).distinct().order_by(r.c.model))),
        "metrics": queries.metric_keys(conn),
    }


# ----------------------------------------------------------------------------- comparisons
@dataclass
class RunSet:
    """Several runs read for comparison: views (with params), histories, and what compare would warn about."""

    runs: list[RunView]
    histories: dict[int, dict[str, list[tuple[int, Optional[float]]]]]
    comparison: queries.Comparison
    shared_params: dict[str, Any]
    differing_params: dict[str, dict[int, Any]]
    metrics: list[str]  # overall test metrics any run has, preferred first


PREFERRED_METRICS = METRIC_ORDER  # zoo.vocab's


def resolve_runs(registry: RunStore, conn: Connection, refs: Sequence[str] = (), group: Optional[str] = None,
                 *, limit: int = 50) -> list[int]:
    """Run ids from refs (ids or uuid prefixes) and/or a group, in the order given, each once."""
    ids = [registry.resolve(ref, conn) for ref in refs]
    if group:
        flt = RunFilter(group=group)
        views, _ = queries.list_runs(conn, flt, limit=None, host=registry.host)
        if not views:
            raise ZooError(f"No runs in group '{group}': `zoo show RUN` prints a run's group.")
        ids += sorted(v.id for v in views)
    ids = list(dict.fromkeys(ids))
    if len(ids) > limit:
        raise ZooError(f"{len(ids)} runs asked for: compare at most {limit} at a time.")
    return ids


def run_set(conn: Connection, ids: Sequence[int], *, host: str, metric: str = "accuracy",
            directions: Optional[dict[str, bool]] = None) -> RunSet:
    """The runs' views, histories, shared and differing params; ``directions``: registered metrics'
    higher_is_better (``zoo.components.metric_directions``), so their ranking goes the right way."""
    views = queries.run_views(conn, ids, host=host, full=True)
    hist = queries.histories(conn, [v.id for v in views])
    all_keys = sorted({k for v in views for k in v.params})
    shared: dict[str, Any] = {}
    differing: dict[str, dict[int, Any]] = {}
    for key in all_keys:
        values = {v.id: v.params.get(key) for v in views}
        encoded = {repr(v.params[key]) if key in v.params else "<missing>" for v in views}
        if len(encoded) == 1:
            shared[key] = next(iter(values.values()))
        else:
            differing[key] = values
    metrics = metric_order({k for v in views for k in v.metrics if "/" not in k}, list(directions or ()))
    data_fps = sorted({v.dataset_fingerprint for v in views if v.dataset_fingerprint})
    split_fps = sorted({v.split_fingerprint for v in views if v.split_fingerprint})
    key = queries.METRIC_ALIASES.get(metric, metric)
    comparison = queries.Comparison(
        metric=key, lower_is_better=queries.lower_is_better(key, directions or {}), runs=views, total=len(views),
        other_metrics=[k for k in metrics if k != key], differing_params=differing,
        missing=[],  # unlike `zoo compare`, the pages keep runs without the metric (shown as —)
        dataset_fingerprints=data_fps if len(data_fps) > 1 else [],
        split_fingerprints=split_fps if len(split_fps) > 1 else [],
    )
    return RunSet(runs=views, histories=hist, comparison=comparison, shared_params=shared,
                  differing_params=differing, metrics=metrics)


def rank(runs: RunSet) -> None:
    """Orders the runs best first by the comparison's metric, those without it last (as `zoo compare` ranks)."""
    key, lower = runs.comparison.metric, runs.comparison.lower_is_better

    def order(view: RunView) -> tuple[bool, float]:
        value = view.metrics.get(key)
        return value is None, 0.0 if value is None else (value if lower else -value)

    runs.runs.sort(key=order)

