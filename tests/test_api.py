"""`zoo ui`'s JSON API through starlette's TestClient: runs with --where/sort/pages, one run, compare, errors, Host."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette", reason="zoo ui needs the ui extra: pip install 'zoo-vision[ui]'")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx (in the dev extra)")

from starlette.testclient import TestClient  # noqa: E402
from test_web import EVIL, fill_registry  # noqa: E402

from zoo.store import Registry  # noqa: E402


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from zoo.web.app import create_app

    path = tmp_path_factory.mktemp("api") / "registry.db"
    ids = fill_registry(path, extra=30)
    with Registry.open(path, readonly=True) as registry:
        yield TestClient(create_app(registry), base_url="http://127.0.0.1"), ids


def get(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.json()


def test_runs_filter_sort_and_pages(api):
    client, ids = api
    page = get(client, "/api/runs?where=" + "accuracy >= 0.75 and model glob 'res*'" + "&sort=-accuracy")
    assert [r["id"] for r in page["runs"]] == [ids["a"], ids["c"]] and page["total"] == 2
    ascending = get(client, "/api/runs?where=tag.sweep = s&sort=accuracy&per_page=10&page=2")
    assert ascending["total"] == 30 and ascending["pages"] == 3 and len(ascending["runs"]) == 10
    values = [r["metrics"]["test_accuracy"] for r in ascending["runs"]]
    assert values == sorted(values)
    newest = get(client, "/api/runs?per_page=1")
    assert newest["runs"][0]["id"] == max(ids.values()) + 30


def test_one_run_has_params_metrics_history_and_escapes_nothing_it_should_not(api):
    client, ids = api
    run = get(client, f"/api/runs/{ids['a']}")
    assert run["params"]["lr"] == 0.01 and run["metrics"]["test_accuracy"] == 0.9
    assert [e for e, _ in run["history"]["val_loss"]] == [1, 2, 3, 4]
    evil = get(client, f"/api/runs/{ids['evil']}")
    assert evil["name"] == EVIL  # JSON, served as JSON with nosniff: the text is data, as recorded
    assert "error" in get(client, "/api/runs/9999", 404)


def test_compare_ranks_like_zoo_compare(api):
    client, ids = api
    ranked = get(client, f"/api/compare?metric=accuracy&run={ids['a']},{ids['b']}&run={ids['c']}")
    assert [r["id"] for r in ranked["runs"]] == [ids["a"], ids["c"], ids["b"]] and ranked["metric"] == "test_accuracy"
    assert ranked["runs"][0]["params"]["lr"] == 0.01  # the params that differ
    best = get(client, "/api/compare?metric=loss&where=tag.exp = base&top=1")
    assert [r["id"] for r in best["runs"]] == [ids["a"]] and best["total"] == 2


@pytest.mark.parametrize("url, says", [
    ("/api/runs?where=accuracy >", "column 11"),
    ("/api/runs?where=nosuchfield = 1", "unknown field"),
    ("/api/runs?per_page=100000", "per_page must be between 1 and 200"),
    ("/api/runs?page=x", "page must be a whole number"),
    ("/api/compare?top=0", "top must be between"),
    ("/api/compare?metric=nosuch", "Unknown metric"),
])
def test_bad_requests_are_400_with_one_message(api, url, says):
    client, _ = api
    body = get(client, url, 400)
    assert says in body["error"] and "Traceback" not in json.dumps(body)


def test_api_is_read_only_and_checks_the_host(api):
    client, _ = api
    assert client.post("/api/runs").status_code == 405
    assert client.delete("/api/runs/1").status_code == 405
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    assert get(client, "/api/nothing", 404) == {"error": "Not found."}


def test_the_runs_page_where_box(api):
    client, ids = api
    page = client.get("/", params={"where": "model = alexnet"})
    assert page.status_code == 200 and 'name="where" value="model = alexnet"' in page.text
    assert f'href="/runs/{ids["b"]}"' in page.text and f'href="/runs/{ids["a"]}"' not in page.text
    bad = client.get("/", params={"where": "model = "})
    assert bad.status_code == 400 and "Bad --where at column 8" in bad.text
