"""``zoo ui``'s read-only JSON API, for notebooks and dashboards: the same reads as the pages, as JSON.

    GET /api/runs?where=FILTER&sort=[-]KEY&page=N&per_page=N&deleted=1   a page of runs (list-runs --format json)
    GET /api/runs/REF                                                     one run: params, metrics, history (show)
    GET /api/compare?metric=M&where=FILTER&by=model|PARAM&top=N&run=ID    ranked runs (compare --format json)

Served by the ui's app, so behind the same Host check; a bad filter or name is a 400 (404 for an unknown run)
with ``{"error": "..."}``, never a traceback. Pages and ``top`` are capped (MAX_PER_PAGE, MAX_TOP).
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zoo import render
from zoo.errors import UnknownName, ZooError
from zoo.store import queries
from zoo.store.api import RunStore
from zoo.web import data

MAX_PER_PAGE = max(data.PAGE_SIZES)
MAX_TOP = 500
MAX_RUNS = 50  # run=... in one compare
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


def json_response(payload: Any, status_code: int = 200) -> Response:
    return Response(render.to_json(payload), status_code=status_code, media_type="application/json",
                    headers=HEADERS)


def _guarded(view: Callable[[Request], Any]) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        try:
            return json_response(view(request))
        except UnknownName as exc:
            return json_response({"error": str(exc)}, 404)
        except ZooError as exc:
            return json_response({"error": str(exc)}, 400)

    endpoint.__name__ = view.__name__
    return endpoint


def _int(request: Request, name: str, default: int, *, lowest: int, highest: int) -> int:
    text = request.query_params.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise ZooError(f"{name} must be a whole number, not {text!r}.") from None
    if not lowest <= value <= highest:
        raise ZooError(f"{name} must be between {lowest} and {highest} (got {value}).")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def sort_key(text: str) -> tuple[str, bool]:
    """'-accuracy' -> ('test_accuracy', descending); a run column (id, started, ...) or a metric key."""
    text = text.strip() or "-id"
    desc = text.startswith("-")
    key = text.lstrip("-+").strip()
    if key not in data.RUN_SORTS:
        key = queries.METRIC_ALIASES.get(key.lower(), key)
    return key, desc


def routes(registry: RunStore) -> list[Route]:
    def runs(request: Request) -> dict[str, Any]:
        params = request.query_params
        key, desc = sort_key(params.get("sort", "-id"))
        query = data.RunQuery(
            where=params.get("where", "").strip(), sort=key, desc=desc,
            page=_int(request, "page", 1, lowest=1, highest=10**9),
            per_page=_int(request, "per_page", data.DEFAULT_PAGE_SIZE, lowest=1, highest=MAX_PER_PAGE),
            deleted=_flag(request, "deleted"),
        )
        with registry.connect() as conn:
            page = data.run_page(conn, query, host=registry.host)
        return {"total": page.total, "page": page.page, "pages": page.pages, "per_page": query.per_page,
                "runs": [render.run_record(run) for run in page.runs]}

    def run(request: Request) -> dict[str, Any]:
        with registry.connect() as conn:
            run_id = registry.resolve(request.path_params["ref"], conn)
            view = queries.run_views(conn, [run_id], host=registry.host, full=True)[0]
            history = queries.histories(conn, [run_id]).get(run_id, {})
        return render.run_json(view, history)

    def compare(request: Request) -> dict[str, Any]:
        params = request.query_params
        refs = [ref for value in params.getlist("run") for ref in value.replace(",", " ").split()]
        if len(refs) > MAX_RUNS:
            raise ZooError(f"{len(refs)} runs asked for: compare at most {MAX_RUNS} at a time.")
        metric = params.get("metric", "accuracy").strip() or "accuracy"
        by = params.get("by", "").strip() or None
        top = _int(request, "top", 20, lowest=1, highest=MAX_TOP)
        with registry.connect() as conn:
            ids = [registry.resolve(ref, conn) for ref in refs] or None
            flt = queries.RunFilter(ids=ids, query=params.get("where", "").strip() or None)
            if not queries.has_metrics(conn):
                return {"metric": metric, "total": 0, "runs": []}
            try:
                cmp = queries.compare(conn, metric, flt, by=by, top=top, host=registry.host)
            except UnknownName as exc:  # an unknown metric or param: a bad request, not a missing page
                raise ZooError(str(exc)) from None
        return {"metric": cmp.metric, "lower_is_better": cmp.lower_is_better, "total": cmp.total,
                "warnings": render.compare_warnings(cmp), "runs": render.compare_records(cmp)}

    return [
        Route("/api/runs", _guarded(runs), methods=["GET"], name="api_runs"),
        Route("/api/runs/{ref}", _guarded(run), methods=["GET"], name="api_run"),
        Route("/api/compare", _guarded(compare), methods=["GET"], name="api_compare"),
    ]
