"""``zoo ui``: a read-only Starlette app over the run registry (runs, one run, compare).

Server-rendered HTML (jinja2, autoescaped) with inline SVG charts: no JavaScript, nothing from a CDN. Only GET
routes; the registry is opened read-only once; the static route serves files of the package's static folder only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zoo import render
from zoo.errors import UnknownName, ZooError
from zoo.filters import STATUS_CHOICES
from zoo.store import queries
from zoo.store.api import RunStore, StudyStore
from zoo.vocab import STUDY_TAG, TRIAL_TAG
from zoo.web import api, data, figures

HERE = Path(__file__).parent
REFRESH_S = 10  # pages showing a running run reload themselves this often
SECURITY_HEADERS = {
    # no script may run at all, and nothing is loaded from anywhere but this server
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=render.fmt_num, time=render.fmt_time, duration=render.fmt_duration,
                       value=render.fmt_value, metric=render.short_metric)
    env.globals.update(epochs_cell=render.epochs_cell, label=figures.run_label,
                       study_of=lambda run: getattr(run, "system_tags", {}).get(STUDY_TAG),
                       trial_of=lambda run: getattr(run, "system_tags", {}).get(TRIAL_TAG))
    return env


LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(registry: StudyStore, *, allowed_hosts: Sequence[str] = LOCAL_NAMES) -> Starlette:
    """The app over an open (read-only) Registry. Requests naming another host are refused (400), so a web page
    elsewhere cannot read the runs through DNS rebinding; ``["*"]`` when serving the network on purpose."""
    env = templates()
    warm_up(env, registry)

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(location=registry.location, **context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def guarded(view: Callable[[Request], HTMLResponse]) -> Callable[[Request], HTMLResponse]:
        def endpoint(request: Request) -> HTMLResponse:
            try:
                return view(request)
            except UnknownName as exc:
                return page("error.html", 404, message=str(exc))
            except ZooError as exc:
                return page("error.html", 400, message=str(exc))

        endpoint.__name__ = view.__name__
        return endpoint

    def runs(request: Request) -> HTMLResponse:
        params = request.query_params
        query = data.RunQuery(
            model=params.get("model", "").strip(), status=params.get("status", "").strip(),
            tags=[t for t in params.getlist("tag") if t.strip()], group=params.get("group", "").strip(),
            dataset=params.get("dataset", "").strip(), since=params.get("since", "").strip(),
            where=params.get("where", "").strip(),
            sort=params.get("sort", "id").strip() or "id", desc=params.get("order", "desc") != "asc",
            page=_int(params.get("page"), 1), per_page=_int(params.get("per_page"), data.DEFAULT_PAGE_SIZE),
        )
        with registry.connect() as conn:
            result = data.run_page(conn, query, host=registry.host)
            choices = data.filter_choices(conn)

        def link(**changes: Any) -> str:
            merged = [(k, v) for k, v in params.multi_items() if k not in changes]
            merged += [(k, v) for k, v in changes.items() if v is not None]
            return "?" + urlencode(merged)

        def sort_link(key: str) -> str:
            same = query.sort == key
            return link(sort=key, order=("asc" if query.desc else "desc") if same else "desc", page=None)

        running = any(v.display_status == "running" for v in result.runs)
        return page("runs.html", query=query, result=result, choices=choices, link=link, sort_link=sort_link,
                    statuses=STATUS_CHOICES, page_sizes=data.PAGE_SIZES, refresh=REFRESH_S if running else None)

    def run(request: Request) -> HTMLResponse:
        ref = request.path_params["ref"]
        with registry.connect() as conn:
            run_id = registry.resolve(ref, conn)
            view = queries.run_views(conn, [run_id], host=registry.host, full=True)[0]
            history = queries.histories(conn, [run_id]).get(run_id, {})
        overall = {k: v for k, v in view.metrics.items() if "/" not in k}
        per_class = render.per_class(view.classes, view.metrics, view.confusion) if view.classes and (
            view.confusion or any("/" in k for k in view.metrics)) else []
        note = getattr(view, "system_tags", {}).get(render.NOTE_TAG)
        return page(
            "run.html", run=view, note=note, curves=figures.run_curves(view, history),
            history_keys=render.ordered_keys(history, render.HISTORY_ORDER),
            history_rows=_history_rows(history), history_cell=render.history_cell,
            metrics=[(k, overall[k]) for k in render.ordered_keys(overall, render.MACRO_ORDER)],
            per_class=per_class,
            confusion=figures.confusion(view.classes, view.confusion, "Confusion matrix (test)"),
            evaluations=[(e, figures.confusion(e.classes, e.confusion, f"Evaluation {e.id}: {e.dataset}"))
                         for e in view.evaluations],
            evaluation_keys=render.ordered_keys({k for e in view.evaluations for k in e.metrics if "/" not in k},
                                                render.MACRO_ORDER),
            refresh=REFRESH_S if view.display_status == "running" else None,
        )

    def compare(request: Request) -> HTMLResponse:
        params = request.query_params
        refs = [ref for value in params.getlist("run") for ref in value.replace(",", " ").split()]
        group = params.get("group", "").strip()
        metric = params.get("metric", "accuracy").strip() or "accuracy"
        if not refs and not group:
            return page("compare.html", runs=None, refs="", group="", metric=metric)
        from zoo import render_compare
        from zoo.store import comparisons

        with registry.connect() as conn:
            ids = data.resolve_runs(registry, conn, refs, group or None)
            runs = data.run_set(conn, ids, host=registry.host, metric=metric, directions=directions())
            summary = comparisons.by_model(conn, runs.runs)
        data.rank(runs)
        return page(
            "compare.html", runs=runs, refs=" ".join(str(i) for i in ids if not group), group=group, metric=metric,
            warnings=render.compare_warnings(runs.comparison),
            by_model_rows=render_compare.summary_rows(summary.groups) if summary else [],
            verdicts=[v.sentence() for v in summary.verdicts] if summary else [], by_model_note=render_compare.BY_MODEL_NOTE,
            curves=figures.overlay_curves(runs.runs, runs.histories), bars=figures.metric_bars(runs.runs, runs.metrics),
            refresh=REFRESH_S if any(v.display_status == "running" for v in runs.runs) else None,
        )

    def studies(request: Request) -> HTMLResponse:
        from zoo.tune import list_studies, optuna_or_error

        try:
            optuna_or_error("The studies page")
        except ZooError as exc:
            return page("studies.html", studies=[], note=str(exc))
        return page("studies.html", studies=list_studies(registry), note=None)

    def study(request: Request) -> HTMLResponse:
        from zoo.tune import optuna_or_error, read_study

        optuna_or_error("The study page")
        report = read_study(registry, request.path_params["name"])
        return page("study.html", study=report, rows=report.rows())

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = "Not found." if status == 404 else getattr(exc, "detail", "Bad request.")
        if request.url.path.startswith("/api/"):
            return api.json_response({"error": message}, status)
        return page("error.html", status, message=message)

    routes = [
        Route("/", guarded(runs), methods=["GET"], name="runs"),
        Route("/runs/{ref}", guarded(run), methods=["GET"], name="run"),
        Route("/compare", guarded(compare), methods=["GET"], name="compare"),
        Route("/studies", guarded(studies), methods=["GET"], name="studies"),
        Route("/studies/{name:path}", guarded(study), methods=["GET"], name="study"),
        *api.routes(registry),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found},
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))])


def warm_up(env: Environment, registry: RunStore) -> None:
    """Compiles the templates and reads one run, at start-up, so that the first page a user opens is as quick
    as the next ones (lazy imports, template compilation and a cold database cache would land on it)."""
    for name in env.list_templates(filter_func=lambda name: name.endswith(".html")):
        env.get_template(name)
    with registry.connect() as conn:
        data.run_page(conn, data.RunQuery(per_page=1), host=registry.host)
        data.filter_choices(conn)


def directions() -> dict[str, bool]:
    """Registered metrics' higher_is_better (their plugins' metadata; no torch is imported)."""
    from zoo.components import metric_directions
    from zoo.plugins import get_plugins

    return metric_directions(get_plugins().components("metric"))


def _int(text: Any, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _history_rows(history: figures.History) -> list[tuple[int, dict[str, Any]]]:
    by_epoch: dict[int, dict[str, Any]] = {}
    for key, points in history.items():
        for epoch, value in points:
            by_epoch.setdefault(epoch, {})[key] = value
    return [(epoch, by_epoch[epoch]) for epoch in sorted(by_epoch)]
