"""`zoo ui` over HTTP: the runs page (filters, sort, pages), a run's page, compare, escaping, read-only safety.

The app runs in a real uvicorn server on a free port (a thread here; a subprocess for the command itself), over a
registry filled through the lifecycle API as in test_cli_runs.py: no training.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="zoo ui needs the ui extra: pip install 'zoo-vision[ui]'")
pytest.importorskip("uvicorn", reason="zoo ui needs the ui extra: pip install 'zoo-vision[ui]'")

from test_cli_runs import add_run, dead_pid  # noqa: E402  (the lifecycle-API helper of the CLI tests)

from zoo.render import NOTE_TAG  # noqa: E402
from zoo.store import Registry  # noqa: E402
from zoo.vocab import GROUP_TAG  # noqa: E402

EVIL = "<script>alert(1)</script>"
EVIL_CLASS = '<img src=x onerror="alert(2)">'


def fill_registry(path: Path, extra: int = 0) -> dict[str, int]:
    """Runs of every status, two groups, different datasets, an evil name, tag and class; ``extra`` cheap runs."""
    base = {"epochs": 4, "batch_size": 16, "optimizer": "adamw"}
    with Registry.open(path) as reg:
        ids = {
            "a": add_run(reg, "resnet18", params={**base, "lr": 0.01}, acc=0.90, loss=0.30, name="first",
                         tags={"exp": "base", GROUP_TAG: "g1"}),
            "b": add_run(reg, "alexnet", params={**base, "lr": 0.001}, acc=0.75, loss=0.60, confusion=[[5, 0], [5, 0]],
                         tags={"exp": "base", GROUP_TAG: "g1"}),
            "c": add_run(reg, "resnet34", params={**base, "lr": 0.1}, acc=0.80, loss=0.20, dataset_fp="beef0123",
                         tags={"exp": "other", GROUP_TAG: "g2"}),
            "failed": add_run(reg, "tinycnn", params={**base, "lr": 0.01}, status="failed", epochs=2,
                              error="RuntimeError: <b>out of memory</b>"),
            "evil": add_run(reg, "tinycnn", params={**base, "lr": 0.05, "note": EVIL}, acc=0.60, loss=0.9, name=EVIL,
                            tags={"note": EVIL, NOTE_TAG: f"lr too high {EVIL}"}),
            "stale": add_run(reg, "resnet50", params=base, status="running", epochs=1),
        }
        reg.update_run(ids["stale"], pid=dead_pid())
        ids["classes"] = reg.start_run(model="tinycnn", plugin="builtin", params=base, name="odd classes",
                                       dataset={"path": "/data/odd", "fingerprint": "fp-odd", "classes": [EVIL_CLASS, "b"]})
        reg.log_epoch(ids["classes"], 1, {"train_loss": 1.0, "val_loss": 1.1})
        reg.log_metrics(ids["classes"], {"test_accuracy": 0.5}, confusion=[[1, 1], [1, 1]])
        reg.finish_run(ids["classes"], "completed", best_epoch=1, epochs_run=1)
        reg.add_evaluation(ids["a"], {"test_accuracy": 0.55, "test_f1": 0.5}, dataset="/data/more",
                           dataset_fingerprint="fp-more", confusion=[[3, 2], [2, 3]], classes=["cat", "dog"])
        for i in range(extra):
            run_id = reg.start_run(model=f"sweep{i % 3}", plugin="builtin", params={"lr": i / 1000}, tags={"sweep": "s"})
            reg.log_metrics(run_id, {"test_accuracy": i / (extra * 2)})
            reg.finish_run(run_id, "completed", epochs_run=1, best_epoch=1)
    return ids


class LiveServer:
    """The zoo ui app in uvicorn on a free local port, in a daemon thread."""

    def __init__(self, registry_path: Path):
        import uvicorn

        from zoo.web.app import create_app

        self.registry = Registry.open(registry_path, readonly=True, create=False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.registry), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=20) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None) -> int:
        """The status of a request sent with this exact path (no client-side normalisation of ../)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, headers=headers or {})
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.registry.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("web") / "registry.db"
    ids = fill_registry(path, extra=30)
    server = LiveServer(path)
    yield server, ids, path
    server.stop()


def row_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', page)]


def test_runs_page_lists_newest_first_and_pages(site):
    server, ids, _ = site
    status, page, headers = server.get("/")
    assert status == 200 and "text/html" in headers["content-type"]
    total = len(ids) + 30
    assert f"{total} runs" in page and "page 1 of 1" in page
    assert row_ids(page) == sorted(row_ids(page), reverse=True) and len(row_ids(page)) == total
    assert "stale" in page and "failed" in page  # the display status of each run

    first = row_ids(server.get("/?per_page=25")[1])
    second_page = server.get("/?per_page=25&page=2")[1]
    assert len(first) == 25 and "page 2 of 2" in second_page
    assert not set(first) & set(row_ids(second_page)) and len(first) + len(row_ids(second_page)) == total
    assert 'href="?per_page=25&amp;page=1"' in second_page  # links keep the other query parameters
    assert row_ids(server.get("/?per_page=25&page=99")[1]) == row_ids(second_page)  # past the end: the last page


def test_runs_page_sorts_by_any_metric_and_column(site):
    server, ids, _ = site
    page = server.get("/?sort=test_accuracy&order=desc&per_page=200")[1]
    order = row_ids(page)
    assert order[:4] == [ids["a"], ids["c"], ids["b"], ids["evil"]]
    assert order[-1] in (ids["failed"], ids["stale"])  # runs without the metric come last
    ascending = row_ids(server.get("/?sort=test_accuracy&order=asc&per_page=200")[1])
    with_metric = [i for i in ascending if i not in (ids["failed"], ids["stale"])]
    assert with_metric == [i for i in order if i not in (ids["failed"], ids["stale"])][::-1]
    models = re.findall(r'<td class="model">([^<]*)</td>', server.get("/?sort=model&order=asc&per_page=200")[1])
    assert models == sorted(models)
    per_class = server.get("/?sort=test_f1/cat&per_page=5")[1]
    assert 'data-key="test_f1/cat"' in per_class  # the sorted metric gets its own column


@pytest.mark.parametrize("query, expected", [
    ("model=resnet*", {"a", "c", "stale"}),
    ("status=failed", {"failed"}),
    ("status=stale", {"stale"}),
    ("tag=exp%3Dbase", {"a", "b"}),
    ("group=g1", {"a", "b"}),
    ("dataset=beef", {"c"}),  # as list-runs --data: a fingerprint prefix, a folder, a dataset name
    ("dataset=%2Fdata%2Fodd", {"classes"}),
    ("model=resnet*&group=g2", {"c"}),
])
def test_runs_page_filters(site, query, expected):
    server, ids, _ = site
    page = server.get(f"/?{query}")[1]
    assert set(row_ids(page)) == {ids[name] for name in expected}
    assert f"{len(expected)} run{'s' if len(expected) != 1 else ''} match" in page


def test_runs_page_bad_filter_is_one_message(site):
    server, _, _ = site
    status, page, _ = server.get("/?status=bogus")
    assert status == 400 and "Unknown --status &#39;bogus&#39;" in page
    status, page, _ = server.get("/?since=yesterday-ish")
    assert status == 400 and "Bad --since" in page
    assert server.get("/?model=nothing*")[1].count("No runs match these filters.") == 1


def test_run_page_shows_params_curves_confusion_and_evaluations(site):
    server, ids, _ = site
    status, page, _ = server.get(f"/runs/{ids['a']}")
    assert status == 200
    for text in ("Run " + str(ids["a"]), "first", "resnet18", "fp-data", "fp-split", "train 40, val 10, test 10",
                 "exp", "base", "0.9000", "/data/more", "Evaluation"):
        assert text in page, text
    assert re.search(r"<th>lr</th><td>0\.01</td>", page)
    loss = re.search(r'<svg class="chart line-chart" data-chart="loss".*?</svg>', page, re.S).group(0)
    assert loss.count('<circle class="point"') == 8  # train and val loss, 4 epochs each
    assert loss.count('class="best"') == 2 and "best epoch 3" in loss
    assert 'data-chart="accuracy"' in page
    assert page.count('class="chart heatmap"') == 2  # test set and the evaluation
    assert '<tr class="best">' in page  # the best epoch in the history table
    assert server.get(f"/runs/{ids['stale']}")[1].count("recorded as running") == 1
    assert 'href="/compare?group=g1"' in page  # its group, to compare the runs of the same command
    assert '<p class="note" id="note">lr too high &lt;script&gt;' in server.get(f"/runs/{ids['evil']}")[1]


def test_unknown_run_is_404_with_a_message(site):
    server, _, _ = site
    status, page, _ = server.get("/runs/9999")
    assert status == 404 and "No run &#39;9999&#39;" in page
    assert server.get("/runs/x-y")[0] == 404


def test_studies_page_on_a_registry_without_studies(site):
    """No `zoo tune` ever ran here (no Optuna tables): an empty list, and an unknown study is a 404 page
    (tests/test_tune.py shows a real study)."""
    server, _, path = site
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    status, page, _ = server.get("/studies")
    assert status == 200 and '<a href="/studies">Studies</a>' in page
    try:
        import optuna  # noqa: F401
    except ImportError:
        assert "needs Optuna: pip install" in page
    else:
        assert "No study recorded yet" in page and 'id="studies"' not in page
        status, page, _ = server.get("/studies/s1")
        assert status == 404 and '<p class="error" id="error">Registry ' in page and "holds no study" in page
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_compare_page_overlays_runs_and_warns_like_zoo_compare(site):
    server, ids, _ = site
    status, page, _ = server.get(f"/compare?run={ids['a']}&run={ids['c']}")
    assert status == 200
    assert "2 different datasets" in page  # the fairness warning of zoo compare
    for key in ("train_loss", "val_loss", "val_acc"):
        chart = re.search(rf'data-chart="{key}".*?</svg>', page, re.S).group(0)
        assert chart.count('<g class="series"') == 2 and chart.count('<circle class="point"') == 8
    assert 'class="chart bar-chart" data-chart="test_accuracy"' in page
    assert "Params that differ: lr." in page and "optimizer=adamw" in page
    group = server.get("/compare?group=g1")[1]
    assert set(int(i) for i in re.findall(r'<tr data-run="(\d+)"', group)) == {ids["a"], ids["b"]}
    assert "different datasets" not in group
    assert server.get("/compare?group=nope")[0] == 400
    assert "Give run ids" in server.get("/compare")[1]
    assert server.get(f"/compare?run={ids['a']},{ids['b']}")[1].count('<tr data-run=') == 2
    ranked = server.get(f"/compare?run={ids['b']}&run={ids['failed']}&run={ids['a']}")[1]  # best accuracy first
    assert row_ids(ranked) == [ids["a"], ids["b"], ids["failed"]]
    assert row_ids(server.get(f"/compare?run={ids['a']}&run={ids['c']}&metric=loss")[1]) == [ids["c"], ids["a"]]


def test_user_strings_are_escaped_everywhere(site):
    server, ids, _ = site
    pages = [server.get("/")[1], server.get(f"/runs/{ids['evil']}")[1], server.get(f"/runs/{ids['failed']}")[1],
             server.get(f"/runs/{ids['classes']}")[1], server.get(f"/compare?run={ids['evil']}&run={ids['a']}")[1]]
    for page in pages:
        assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0] and "note=&lt;script&gt;" in pages[0]
    assert "&lt;b&gt;out of memory&lt;/b&gt;" in pages[2]
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in pages[3]  # a class name, in the heat map
    assert server.get("/?model=%3Cscript%3E")[1].count('value="&lt;script&gt;"') == 1  # echoed filter values


def test_read_only_no_writes_and_static_stays_in_its_folder(site):
    server, ids, path = site
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert server.raw(method, "/") == 405
        assert server.raw(method, f"/runs/{ids['a']}") == 405
    assert server.raw("GET", "/static/zoo.css") == 200
    for escape in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2fdata.py",
                   "/static/../../store/registry.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd"):
        assert server.raw("GET", escape) == 404, escape
    status, _, headers = server.get("/")
    assert "script-src" not in headers["content-security-policy"] and "default-src 'none'" in \
        headers["content-security-policy"]  # no script may run, even if something slipped through
    assert headers["x-content-type-options"] == "nosniff"
    assert server.raw("GET", "/", {"Host": "attacker.example"}) == 400  # DNS rebinding: only local host names
    assert server.raw("GET", "/", {"Host": f"localhost:{server.port}"}) == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_pages_link_nothing_outside_the_server(site):
    server, ids, _ = site
    for path in ("/", f"/runs/{ids['a']}", f"/compare?run={ids['a']}&run={ids['b']}", "/studies"):
        page = server.get(path)[1]
        assert not re.search(r'(src|href)="(https?:)?//', page), path  # no CDN: every file comes from here


def test_running_runs_refresh_the_page(tmp_path):
    path = tmp_path / "live.db"
    with Registry.open(path) as reg:
        done = add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0)
        live = add_run(reg, "tinycnn", params={}, status="running", epochs=1)
    server = LiveServer(path)
    try:
        assert 'http-equiv="refresh"' in server.get("/")[1]
        assert 'http-equiv="refresh"' in server.get(f"/runs/{live}")[1]
        assert 'http-equiv="refresh"' not in server.get(f"/runs/{done}")[1]
        assert 'http-equiv="refresh"' not in server.get("/?status=completed")[1]
    finally:
        server.stop()


def test_read_path_imports_no_torch(site):
    _, ids, path = site
    script = textwrap.dedent(f"""
        import sys, urllib.request
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import zoo.cli  # the command line as `zoo ui` loads it
        from zoo import report
        from test_web import LiveServer
        server = LiveServer({str(path)!r})
        for page in ("/", "/?sort=test_accuracy", "/runs/{ids['a']}", "/compare?run={ids['a']}&run={ids['b']}"):
            assert urllib.request.urlopen(server.url + page).status == 200
        report.to_html(report.build(server.registry, ["{ids['a']}", "{ids['b']}"], None))
        server.stop()
        heavy = sorted(m for m in ("torch", "torchvision", "matplotlib", "sqlalchemy.orm") if m in sys.modules)
        print("heavy:", heavy)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, ZOO_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout, done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_command_serves_and_warns_when_not_local(site):
    _, ids, path = site
    port = free_port()
    env = dict(os.environ, ZOO_REGISTRY=str(path))
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "ui", "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/runs/{ids['a']}", timeout=5) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.1)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "Serving on 0.0.0.0" in err and "--host 127.0.0.1" in err
    assert f"at http://127.0.0.1:{port}/" in out and "read-only" in out


def test_ui_command_errors_are_one_line(cli, tmp_path):
    result = cli("--registry", str(tmp_path / "missing.db"), "ui")
    assert result.exit_code == 1 and "Error" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "missing.db").exists()  # read-only: nothing created
    result = cli("ui", "--port", "0")
    assert result.exit_code == 1 and "--port" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fill_registry(tmp_path / "registry.db")
        result = cli("--registry", str(tmp_path / "registry.db"), "ui", "--port", str(port))
    assert result.exit_code == 1 and f"Cannot serve on 127.0.0.1:{port}" in result.output


def test_numbers_and_filters_past_every_bound_are_a_page_not_a_500(site):
    server, ids, _ = site
    huge = "9" * 30
    status, page, _ = server.get(f"/runs/{huge}")
    assert status == 404 and "No run" in page
    status, page, _ = server.get(f"/?page={huge}")  # past the end: the last page
    assert status == 200 and f"/runs/{ids['a']}" in page
    status, page, _ = server.get("/?since=99999999d")
    assert status == 400 and "Bad --since" in page
    status, page, _ = server.get("/?" + "&".join(f"tag=k{i}%3Dv" for i in range(1500)))
    assert status == 400 and "at most 50" in page
