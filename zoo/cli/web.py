"""Commands that show runs outside the terminal: ``zoo ui`` (a local read-only web app) and ``zoo report``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from zoo.cli.app import app, open_registry
from zoo.errors import ZooError

UI_EXTRA = "pip install 'zoo-vision[ui]'"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _need_ui(what: str) -> None:
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        if what == "zoo ui":
            import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ZooError(f"{what} needs {exc.name}, from the optional extra: {UI_EXTRA}") from None


@app.command("ui")
def ui(
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 shows the runs to your network)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the runs page in the default browser."),
) -> None:
    """Serve the registry as a local, read-only web page: runs, one run's curves, comparisons."""
    _need_ui("zoo ui")
    if not 0 < port < 65536:
        raise ZooError(f"--port must be between 1 and 65535 (got {port}).")
    from zoo.errors import print_warning

    if host not in LOCAL_HOSTS:
        print_warning(f"Serving on {host}: anyone who can reach this machine on port {port} can read every run "
                      "in the registry (names, params, tags, paths). Use --host 127.0.0.1 to keep it local.")
    with open_registry(readonly=True, create=False) as registry:
        serve(registry, host=host, port=port, open_browser=open_browser)


def serve(registry, *, host: str, port: int, open_browser: bool = False) -> None:
    import socket
    import threading
    import webbrowser

    import uvicorn

    from zoo.web.app import create_app

    # Bound here, not by uvicorn, so that a port in use is one line of ours.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ZooError(f"Cannot serve on {host}:{port}: {exc.strerror or exc}. Pick another --port "
                       "(or --host).") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    typer.echo(f"zoo ui: {registry.location} (read-only) at {url}  (Ctrl-C stops it)")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    app = create_app(registry) if host in LOCAL_HOSTS else create_app(registry, allowed_hosts=["*"])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])


@app.command("report")
def report(
    runs: Optional[List[str]] = typer.Argument(None, help="Runs to report on (ids or uuid prefixes)."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help="Report on the runs of this group."),
    where: Optional[str] = typer.Option(None, "--where", "-w", metavar="FILTER",
                                        help="Report on the runs matching a filter (as list-runs --where)."),
    study: Optional[str] = typer.Option(None, "--study", "-s", metavar="NAME", show_default=False,
                                        help="Report on a `zoo tune` study: its trials, best trial and the command "
                                             "that reproduces it, parameter importances (as `zoo tune show`)."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o",
                                help="File to write: .html (self-contained) or .md (with a PNG beside it)."),
) -> None:
    """Write a report on runs: shared and differing settings, results, loss curves, confusion matrices; or on a
    `zoo tune` study (--study)."""
    from zoo import report as reporting

    if study is not None:
        if runs or group or where:
            raise ZooError("--study reports on a study alone: drop the runs, --group and --where (a study's runs "
                           "are its group: zoo report --group STUDY).")
        _report_study(study, output)
        return
    if not runs and not group and not where:
        raise ZooError("Name the runs to report on (zoo report 3 5 8), a group (zoo report --group NAME) or a "
                       "filter (--where \"accuracy > 0.9\").")
    fmt = reporting.format_of(output)
    if fmt == "html":
        _need_ui("zoo report -o FILE.html")
    with open_registry(readonly=True, create=False) as registry:
        if where:
            runs = _matching(registry, where, runs, group)
            group = None
        written = reporting.write(registry, runs or [], group, output.expanduser(), fmt)
    typer.echo("Wrote " + " and ".join(str(path) for path in written) + ".")


def _report_study(name: str, output: Path) -> None:
    from zoo import report as reporting
    from zoo.tune import optuna_or_error

    fmt = reporting.format_of(output)
    if fmt == "html":
        _need_ui("zoo report -o FILE.html")
    optuna_or_error("zoo report --study")
    with open_registry(readonly=True, create=False) as registry:
        written = reporting.write_study(registry, name, output.expanduser(), fmt)
    typer.echo("Wrote " + " and ".join(str(path) for path in written) + ".")


def _matching(registry, where: str, refs: Optional[List[str]], group: Optional[str]) -> List[str]:
    """The runs a --where filter picks (among the runs or group named, if any), oldest first."""
    from zoo.filters import run_filter
    from zoo.store import queries

    with registry.connect() as conn:
        ids = [registry.resolve(ref, conn) for ref in refs] if refs else None
        flt = run_filter(where=where, ids=ids, group=group)
        views, _ = queries.list_runs(conn, flt, limit=None, host=registry.host)
    if not views:
        raise ZooError(f"No runs match --where {where!r}: nothing to report. `zoo list-runs --where` shows what "
                       "a filter picks.")
    return [str(v.id) for v in sorted(views, key=lambda v: v.id)]
