"""`zoo ui` in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

One browser and one server for the module; each test saves a screenshot of its page under its tmp_path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="zoo ui needs the ui extra: pip install 'zoo-vision[ui]'")
pytest.importorskip("selenium", reason="the browser tests need selenium (in the dev extra)")

from test_web import EVIL, LiveServer, fill_registry  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("browser") / "registry.db"
    ids = fill_registry(path)
    server = LiveServer(path)
    yield server, ids
    server.stop()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shot(driver, folder: Path, name: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height + 40, 600), 4000))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000
    driver.set_window_size(1400, 1100)


def listed(driver) -> list[int]:
    return [int(row.get_attribute("data-run")) for row in driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]


def follow(driver, element, expected: str) -> None:
    """Click a link or button and wait for the page it leads to (its URL contains ``expected``)."""
    element.click()
    WebDriverWait(driver, 10).until(lambda d: expected in d.current_url
                                    and d.execute_script("return document.readyState") == "complete")


def count(driver, selector: str) -> int:
    """How many elements match, without the implicit wait that an empty find_elements would sit through."""
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_runs_page_lists_sorts_and_filters(browser, site, tmp_path):
    server, ids = site
    browser.get(server.url + "/")
    assert sorted(listed(browser)) == sorted(ids.values())
    assert listed(browser) == sorted(ids.values(), reverse=True)  # newest first
    shot(browser, tmp_path, "runs")

    follow(browser, browser.find_element(By.CSS_SELECTOR, 'th a[data-sort="test_accuracy"]'), "order=desc")
    assert listed(browser)[:3] == [ids["a"], ids["c"], ids["b"]]
    assert "▼" in browser.find_element(By.CSS_SELECTOR, "th.sorted").text
    follow(browser, browser.find_element(By.CSS_SELECTOR, 'th a[data-sort="test_accuracy"]'), "order=asc")
    accuracies = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, 'td[data-key="test_accuracy"]')]
    shown = [float(a) for a in accuracies if a != "—"]
    assert shown == sorted(shown) and accuracies[-1] == "—"
    shot(browser, tmp_path, "runs-sorted")

    model = browser.find_element(By.NAME, "model")
    model.clear()
    model.send_keys("resnet*")
    follow(browser, browser.find_element(By.ID, "apply"), "model=resnet")
    assert set(listed(browser)) == {ids["a"], ids["c"], ids["stale"]}
    assert "3 runs match" in browser.find_element(By.ID, "summary").text
    shot(browser, tmp_path, "runs-filtered")


def test_the_runs_page_fits_a_1280_px_window(browser, site, tmp_path):
    """No horizontal scrollbar and the last column (tags) whole inside the window: long names and tags wrap."""
    server, ids = site
    browser.set_window_size(1280, 1000)
    try:
        browser.get(server.url + "/")
        assert sorted(listed(browser)) == sorted(ids.values())
        inner = browser.execute_script("return window.innerWidth")
        assert inner <= 1280
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner
        right = browser.execute_script(
            "return Math.max(...[...document.querySelectorAll('#runs td.tags, #runs th')]"
            ".map(e => e.getBoundingClientRect().right))")
        assert right <= inner
        browser.save_screenshot(str(tmp_path / "runs-1280.png"))
    finally:
        browser.set_window_size(1400, 1100)


def test_clicking_a_run_shows_its_charts(browser, site, tmp_path):
    server, ids = site
    browser.get(server.url + "/")
    follow(browser, browser.find_element(By.LINK_TEXT, "first"), f"/runs/{ids['a']}")
    assert "first" in browser.find_element(By.ID, "run-title").text
    chart = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="loss"]')
    assert chart.is_displayed() and chart.size["width"] > 300
    points = chart.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == 8 and all(p.is_displayed() for p in points)
    assert len(chart.find_elements(By.CSS_SELECTOR, "polyline")) == 2
    assert browser.find_element(By.CSS_SELECTOR, "#confusion svg.heatmap").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#history tr.best")
    shot(browser, tmp_path, "run")


def test_compare_page_overlays_two_runs(browser, site, tmp_path):
    server, ids = site
    browser.get(server.url + "/")
    for run in (ids["a"], ids["c"]):
        browser.find_element(By.CSS_SELECTOR, f'input[type=checkbox][value="{run}"]').click()
    follow(browser, browser.find_element(By.ID, "compare-selected"), "/compare?")
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")
    assert sorted(int(r.get_attribute("data-run")) for r in rows) == sorted([ids["a"], ids["c"]])
    chart = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="val_loss"]')
    series = chart.find_elements(By.CSS_SELECTOR, "g.series")
    assert sorted(int(s.get_attribute("data-run")) for s in series) == sorted([ids["a"], ids["c"]])
    assert all(len(s.find_elements(By.CSS_SELECTOR, "circle.point")) == 4 for s in series)
    assert "different datasets" in browser.find_element(By.CSS_SELECTOR, ".warning").text
    shot(browser, tmp_path, "compare")


def test_a_script_in_a_run_name_shows_as_text(browser, site, tmp_path):
    server, ids = site
    browser.get(server.url + "/")
    cell = browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{ids["evil"]}"] td.name')
    assert cell.text == EVIL
    assert no_alert(browser)
    assert count(browser, "script") == 0
    follow(browser, cell.find_element(By.TAG_NAME, "a"), f"/runs/{ids['evil']}")
    assert EVIL in browser.find_element(By.ID, "run-title").text
    assert EVIL in browser.find_element(By.ID, "tags").text and EVIL in browser.find_element(By.ID, "params").text
    assert no_alert(browser) and count(browser, "script") == 0
    shot(browser, tmp_path, "run-script-name")
    browser.get(server.url + f"/runs/{ids['classes']}")
    assert '<img src=x onerror="alert(2)">' in browser.find_element(By.CSS_SELECTOR, "#confusion").text
    assert no_alert(browser) and count(browser, "img") == 0
