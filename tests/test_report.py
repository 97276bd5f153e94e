"""`zoo report`: HTML and Markdown on registry.db.example (same runs -> same bytes), groups, escaping, errors."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from zoo.render import NOTE_TAG
from zoo.store import Registry
from zoo.vocab import GROUP_TAG

EXAMPLE = Path(__file__).resolve().parent.parent / "registry.db.example"
pytest.importorskip("jinja2", reason="HTML reports need the ui extra: pip install 'zoo-vision[ui]'")


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """A copy of the example registry (5 completed runs on demo: tinycnn, alexnet, resnet18/34/50)."""
    path = tmp_path / "example.db"
    shutil.copyfile(EXAMPLE, path)
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    return path


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_html_report_on_the_example_registry(cli, example, tmp_path):
    out = tmp_path / "report.html"
    before = sha(example)
    assert f"Wrote {out}." in ok(cli("report", "1", "2", "3", "4", "5", "-o", out))
    page = out.read_text()
    assert "<title>Report on runs #1, #2, #3, #4, #5</title>" in page
    results = re.search(r'<table class="grid" id="results">.*?</table>', page, re.S).group(0)
    for text in ("#1 tinycnn", "#5 resnet50", "1.0000", "0.3444", "0.4000", "15 (14)", "11 (4)", "2m 14s", "F1"):
        assert text in results, text
    shared = re.search(r'id="shared">.*?</table>', page, re.S).group(0)
    assert "<th>param lr</th><td>0.001</td>" in shared and "54e7cd86cd3fec31" in shared  # seed settings, one split
    differing = re.search(r'id="differing">.*?</table>', page, re.S).group(0)
    assert "<th>model</th><td>tinycnn</td><td>alexnet</td>" in differing and "param lr" not in differing
    curves = re.search(r'id="curves">.*?</section>', page, re.S).group(0)
    assert 'data-chart="train_loss"' in curves and 'data-chart="val_loss"' in curves
    assert curves.count('<g class="series"') == 15 and curves.count('<circle class="point"') > 100
    assert page.count('class="chart heatmap"') == 5 and "hstripes" in page  # one confusion matrix per run
    environment = re.search(r'id="environment">.*?</table>', page, re.S).group(0)
    assert "<th>torch</th><td>2.14.1</td>" in environment and "<th>device</th><td>cpu</td>" in environment
    # self-contained: nothing to fetch, no script
    assert not re.search(r'(src|href)=', page) and "<script" not in page and "<link" not in page
    again = tmp_path / "again.html"
    ok(cli("report", "1", "2", "3", "4", "5", "-o", again))
    assert again.read_bytes() == out.read_bytes()
    assert sha(example) == before  # read-only


def test_markdown_report_on_the_example_registry_with_its_png(cli, example, tmp_path):
    out = tmp_path / "docs" / "report.md"
    output = ok(cli("report", "3", "1", "-o", out))
    figure = tmp_path / "docs" / "report-losses.png"
    assert f"Wrote {out} and {figure}." in output
    text = out.read_text()
    assert text.startswith("# Report on runs #3, #1\n")
    assert "| #3 resnet18 | resnet18 | completed | 1.0000 |" in text and "| #1 tinycnn | tinycnn |" in text
    assert "| param momentum | 0.9 |" in text and "| model | resnet18 | tinycnn |" in text
    assert "![Training and validation loss per epoch (star: best epoch)](report-losses.png)" in text
    assert "### #3 resnet18" in text and "| dots | 30 | 0 | 0 |" in text
    assert "| torch | 2.14.1 |" in text
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = (out.read_bytes(), figure.read_bytes())
    ok(cli("report", "3", "1", "-o", out))
    assert (out.read_bytes(), figure.read_bytes()) == first  # same runs, same bytes


def add(reg, model, *, name=None, tags=None, lr=0.01, acc=0.8, fingerprint="fp"):
    run_id = reg.start_run(model=model, plugin="builtin", params={"lr": lr, "epochs": 2}, name=name, tags=tags,
                           dataset={"path": "/data", "fingerprint": fingerprint, "classes": ["cat", "<dog>"]})
    for epoch in (1, 2):
        reg.log_epoch(run_id, epoch, {"train_loss": 1 / epoch, "val_loss": 1.2 / epoch})
    reg.log_metrics(run_id, {"test_accuracy": acc, "test_f1": acc}, confusion=[[2, 1], [0, 3]])
    reg.finish_run(run_id, "completed", best_epoch=2, epochs_run=2)
    return run_id


def test_group_report_and_escaping(cli, tmp_path):
    with Registry.open(tmp_path / "registry.db") as reg:
        a = add(reg, "tinycnn", name="<script>alert(1)</script>", tags={GROUP_TAG: "sweep", NOTE_TAG: "lr <b>low</b>"})
        b = add(reg, "resnet18", lr=0.1, tags={GROUP_TAG: "sweep"}, fingerprint="fp2")
        add(reg, "alexnet", tags={GROUP_TAG: "other"})
    html_out, md_out = tmp_path / "g.html", tmp_path / "g.md"
    ok(cli("report", "--group", "sweep", "-o", html_out))
    page = html_out.read_text()
    assert "<title>Report on group sweep</title>" in page
    assert f"#{a} tinycnn" in page and f"#{b} resnet18" in page and "alexnet" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;dog&gt;" in page
    assert "2 different datasets" in page  # the fairness warning of zoo compare
    assert '<td class="note">lr &lt;b&gt;low&lt;/b&gt;</td>' in page
    ok(cli("report", "--group", "sweep", "-o", md_out))
    text = md_out.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "<dog>" not in text
    assert "| param lr | 0.01 | 0.1 |" in text
    assert f"- **#{a} tinycnn (&lt;script&gt;alert(1)&lt;/script&gt;)**: lr &lt;b&gt;low&lt;/b&gt;" in text


@pytest.mark.parametrize("args, fragment", [
    ([], "Name the runs"),
    (["1", "-o", "report.txt"], "end the name with .html or .md"),
    (["99"], "No run '99'"),
    (["--group", "missing"], "No runs in group 'missing'"),
])
def test_report_errors_are_one_line(cli, example, tmp_path, args, fragment):
    result = cli("report", *args)
    assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output


def test_markdown_escapes_control_bytes_and_links_and_report_creates_one_folder_at_most(cli, tmp_path):
    with Registry.open(tmp_path / "registry.db") as reg:
        run = add(reg, "tinycnn", name="\x1b[2Jwiped", tags={NOTE_TAG: "see [here](javascript:alert(1)) \x07"})
    out = tmp_path / "new" / "r.md"
    ok(cli("report", str(run), "-o", out))  # one missing folder: created, as zoo export does
    text = out.read_text()
    assert "\x1b" not in text and "\x07" not in text and "\\\\x1b\\[2Jwiped" in text
    assert not re.search(r"[^\\]\]\(javascript:", text) and "\\[here\\](javascript:alert(1))" in text
    deeper = tmp_path / "a" / "b" / "r.md"
    result = cli("report", str(run), "-o", deeper)
    assert result.exit_code == 1 and "zoo creates only the file's own folder" in result.output
    assert not (tmp_path / "a").exists()
    result = cli("report", str(run), "-o", "/dev/null")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
