"""list-runs, show, compare, delete and plot through the real CLI, on a registry filled via the lifecycle API."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.store import Registry

CLASSES = ["cat", "dog"]


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def zoo(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """The installed CLI in a subprocess (what a user sees, errors included)."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], input=input, capture_output=True,
                          text=True, env=env, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def add_run(reg, model, *, params, acc=None, loss=None, f1=None, status="completed", epochs=4, best=None,
            dataset_fp="fp-data", split_fp="fp-split", tags=None, error=None, confusion=None, name=None):
    run_id = reg.start_run(model=model, plugin="builtin", params=params, name=name, device="cpu", tags=tags,
                           dataset={"path": "/data/pets", "fingerprint": dataset_fp, "split_fingerprint": split_fp,
                                    "classes": CLASSES, "train_size": 40, "val_size": 10, "test_size": 10})
    for epoch in range(1, epochs + 1):
        reg.log_epoch(run_id, epoch, {"train_loss": 2.0 / epoch, "val_loss": 2.5 / epoch + (0.3 if epoch == epochs else 0),
                                      "train_acc": 0.5 + epoch / 20, "val_acc": 0.5 + epoch / 25, "lr": 0.01,
                                      "seconds": 1.5, "images_per_sec": 100.0})
    if acc is not None:
        cm = confusion or [[4, 1], [1, 4]]
        reg.log_metrics(run_id, {"test_accuracy": acc, "test_loss": loss, "test_f1": f1 or acc - 0.02,
                                 "test_precision": acc - 0.01, "test_recall": acc + 0.01,
                                 "test_precision/cat": 0.8, "test_recall/cat": 0.8, "test_f1/cat": 0.8,
                                 "test_precision/dog": 0.8, "test_recall/dog": 0.8, "test_f1/dog": 0.8},
                        confusion=cm)
    if status != "running":
        reg.finish_run(run_id, status, stop_reason={"completed": "max_epochs", "failed": "error",
                                                    "interrupted": "interrupted"}[status],
                       best_epoch=best or (epochs - 1 if epochs > 1 else 1), epochs_run=epochs, error=error)
    return run_id


@pytest.fixture
def runs(tmp_path) -> dict[str, int]:
    """A registry with completed, failed, interrupted, stale and running runs (ZOO_REGISTRY points at it)."""
    base = {"epochs": 4, "batch_size": 16, "optimizer": "adamw", "pretrained": False}
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        ids = {
            "a": add_run(reg, "resnet18", params={**base, "lr": 0.01}, acc=0.90, loss=0.30, tags={"exp": "base"},
                         name="first"),
            "b": add_run(reg, "alexnet", params={**base, "lr": 0.001}, acc=0.75, loss=0.60, tags={"exp": "base"},
                         confusion=[[5, 0], [5, 0]]),
            "c": add_run(reg, "resnet18", params={**base, "lr": 0.1}, acc=0.80, loss=0.20, f1=0.85,
                         tags={"exp": "other"}),
            "failed": add_run(reg, "tinycnn", params={**base, "lr": 0.01}, status="failed", epochs=2,
                              error="RuntimeError: CUDA out of memory"),
            "interrupted": add_run(reg, "tinycnn", params={**base, "lr": 0.01}, status="interrupted", epochs=3),
            "stale": add_run(reg, "resnet50", params={**base, "lr": 0.01}, status="running", epochs=1),
            "running": add_run(reg, "tinycnn", params={**base, "lr": 0.02}, status="running", epochs=2),
        }
        reg.update_run(ids["stale"], pid=dead_pid())
        folder = reg.run_artifacts_dir(ids["c"])
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"checkpoint bytes")
        reg.update_run(ids["c"], checkpoint=str(folder / "best.pt"))
        reg.add_evaluation(ids["a"], {"test_accuracy": 0.55, "test_f1": 0.5}, dataset="/data/other",
                           dataset_fingerprint="fp-other", confusion=[[3, 2], [2, 3]], classes=CLASSES)
    return ids


def registry_path() -> Path:
    return Path(os.environ["ZOO_REGISTRY"])


def digest() -> str:
    return hashlib.sha256(registry_path().read_bytes()).hexdigest()


def as_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- list-runs
def test_list_runs_table_shows_every_status_newest_first(cli, runs):
    result = cli("list-runs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for status in ("completed", "failed", "interrupted", "stale", "running"):
        assert any(status in line for line in lines), status
    stale_line = next(line for line in lines if "resnet50" in line)
    assert "stale" in stale_line and "running" not in stale_line
    # newest first: the row of the last run comes before the row of the first
    first = next(i for i, line in enumerate(lines) if "│ first" in line or " first " in line)
    newest = next(i for i, line in enumerate(lines) if "tinycnn" in line and "running" in line)
    assert newest < first
    row_a = lines[first]
    assert "0.9000" in row_a and "4 (3)" in row_a  # test accuracy, epochs (best)


def test_list_runs_json_and_csv(cli, runs):
    data = as_json(cli("list-runs", "--format", "json"))
    assert [r["id"] for r in data] == sorted(runs.values(), reverse=True)
    by_id = {r["id"]: r for r in data}
    a = by_id[runs["a"]]
    assert {"id", "model", "status", "metrics"} <= set(a)
    assert a["model"] == "resnet18" and a["status"] == "completed" and a["metrics"]["test_accuracy"] == 0.9
    assert a["best_val_loss"] == pytest.approx(2.5 / 3)  # the lowest val loss, not the last
    assert by_id[runs["stale"]]["status"] == "stale" and by_id[runs["failed"]]["metrics"] == {}

    rows = list(csv.DictReader(io.StringIO(cli("list-runs", "--format", "csv").stdout)))
    assert [int(r["id"]) for r in rows] == sorted(runs.values(), reverse=True)
    assert {r["status"] for r in rows} == {"completed", "failed", "interrupted", "stale", "running"}
    assert float(next(r for r in rows if int(r["id"]) == runs["b"])["test_accuracy"]) == 0.75


def ids_of(cli, *args) -> list[int]:
    result = cli("list-runs", "--format", "json", *args)
    rows = json.loads(result.stdout)
    assert result.exit_code == (0 if rows else 1), result.output  # filters that match nothing: exit 1
    return [r["id"] for r in rows]


def test_list_runs_filters(cli, runs):
    assert ids_of(cli, "--model", "resnet*") == [runs["stale"], runs["c"], runs["a"]]
    assert ids_of(cli, "--model", "RESNET18") == [runs["c"], runs["a"]]
    assert ids_of(cli, "--model", "vgg*") == []
    assert ids_of(cli, "--status", "stale") == [runs["stale"]]
    assert ids_of(cli, "--status", "running") == [runs["running"]]
    assert ids_of(cli, "--status", "failed") == [runs["failed"]]
    assert ids_of(cli, "--tag", "exp=base") == [runs["b"], runs["a"]]
    assert ids_of(cli, "--tag", "exp=base", "--tag", "exp=other") == []
    assert ids_of(cli, "--tag", "exp=it's; DROP TABLE runs") == []
    assert ids_of(cli, "--limit", "2") == [runs["running"], runs["stale"]]
    assert len(ids_of(cli, "--limit", "2", "--all")) == len(runs)
    assert len(ids_of(cli, "--since", "1h")) == len(runs)
    future = cli("list-runs", "--format", "json", "--since", "2999-01-01")
    assert future.exit_code == 1 and json.loads(future.stdout) == []  # nothing matched: exit 1, like zoo models
    con = sqlite3.connect(registry_path())  # pretend run a was made three days ago
    con.execute("UPDATE runs SET created = datetime('now', '-3 days') WHERE id = ?", (runs["a"],))
    con.commit()
    con.close()
    assert runs["a"] not in ids_of(cli, "--since", "2d") and runs["a"] in ids_of(cli, "--since", "4d")
    table = cli("list-runs", "--limit", "2")
    assert "2 of 7 matching runs listed" in table.stderr and "2 of 7" not in table.stdout  # said once


def test_list_runs_on_an_empty_registry(cli, tmp_path):
    Registry.open(tmp_path / "empty.db").close()
    result = cli("--registry", tmp_path / "empty.db", "list-runs")
    assert result.exit_code == 0 and "No runs recorded yet" in result.stdout


# ----------------------------------------------------------------------------- show
def test_show_a_completed_run(cli, runs):
    result = cli("show", runs["a"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("Run 1 · first · resnet18", "completed", "batch_size", "adamw", "0.01", "exp=base",
                 "fp-data", "cat, dog", "History (* best epoch)", "3*", "Per class (test)",
                 "Confusion matrix (test)", "true \\ pred", "Evaluations", "/data/other", "test_accuracy",
                 "Confusion matrix (evaluation 1: /data/other)"):
        assert text in out, text
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")  # loss sparklines
    history_rows = [line for line in out.splitlines() if line.startswith("│") and "0.01 │" in line]
    assert len(history_rows) == 4  # one row per epoch (lr column)


def test_show_confusion_matrix_and_per_class_from_counts(cli, runs):
    out = cli("show", runs["b"]).stdout  # b predicts 'cat' for everything
    matrix = out[out.index("Confusion matrix"):]
    cat_row = next(line for line in matrix.splitlines() if line.startswith("│ cat"))
    dog_row = next(line for line in matrix.splitlines() if line.startswith("│ dog"))
    assert [c.strip() for c in cat_row.split("│")[2:4]] == ["5", "0"]
    assert [c.strip() for c in dog_row.split("│")[2:4]] == ["5", "0"]
    data = as_json(cli("show", runs["b"], "--format", "json"))
    assert data["confusion"] == [[5, 0], [5, 0]]
    support = {row["class"]: row["support"] for row in data["per_class"]}
    assert support == {"cat": 5, "dog": 5}


def test_show_failed_and_stale_runs(cli, runs):
    failed = cli("show", runs["failed"])
    assert failed.exit_code == 0 and "Error: RuntimeError: CUDA out of memory" in failed.stdout
    assert "failed" in failed.stdout
    stale = cli("show", runs["stale"]).stdout
    assert "stale" in stale and "recorded as running" in stale


def test_show_json_keeps_types(cli, runs):
    data = as_json(cli("show", str(runs["c"]), "--format", "json"))
    assert data["params"] == {"epochs": 4, "batch_size": 16, "optimizer": "adamw", "pretrained": False, "lr": 0.1}
    assert data["history"]["val_loss"][0] == [1, 2.5]
    assert data["metrics"]["test_loss"] == 0.2 and data["status"] == "completed"
    assert data["checkpoint"].endswith("best.pt") and data["classes"] == CLASSES
    uuid_prefix = data["uuid"][:8]
    assert as_json(cli("show", uuid_prefix, "--format", "json"))["id"] == runs["c"]
    evaluated = as_json(cli("show", runs["a"], "--format", "json"))
    assert evaluated["evaluations"][0]["metrics"]["test_accuracy"] == 0.55
    assert evaluated["metrics"]["test_accuracy"] == 0.9  # an evaluation never overwrites the run's own metrics


# ----------------------------------------------------------------------------- compare
def ranked(cli, *args) -> list[dict]:
    result = cli("compare", "--format", "json", *args)
    rows = json.loads(result.stdout) if result.stdout.strip() else []
    assert result.exit_code == 0 or (rows == [] and result.exit_code == 1), result.output  # 1: nothing matched
    return rows


def test_compare_ranks_by_metric_best_first(cli, runs):
    acc = ranked(cli)
    assert [r["id"] for r in acc] == [runs["a"], runs["c"], runs["b"]]
    assert [r["rank"] for r in acc] == [1, 2, 3] and acc[0]["metric"] == "test_accuracy"
    assert [r["id"] for r in ranked(cli, "--metric", "loss")] == [runs["c"], runs["a"], runs["b"]]  # lower first
    assert [r["id"] for r in ranked(cli, "--metric", "test_loss")] == [runs["c"], runs["a"], runs["b"]]
    assert [r["id"] for r in ranked(cli, "--metric", "f1")] == [runs["a"], runs["c"], runs["b"]]
    assert ranked(cli, "--metric", "f1")[1]["value"] == 0.85
    assert [r["id"] for r in ranked(cli, "--metric", "recall")][0] == runs["a"]
    assert ranked(cli, "--metric", "precision")[0]["metric"] == "test_precision"
    assert len(ranked(cli, "--metric", "f1/cat")) == 3
    assert [r["id"] for r in ranked(cli, "--by", "model", "--best")] == [runs["a"], runs["b"]]
    assert [r["id"] for r in ranked(cli, "--by", "model", "--best", "--metric", "loss")] == [runs["c"], runs["b"]]
    assert [r["id"] for r in ranked(cli, "--model", "resnet*")] == [runs["a"], runs["c"]]
    assert [r["id"] for r in ranked(cli, "--top", "1")] == [runs["a"]]
    assert [r["id"] for r in ranked(cli, "--tag", "exp=base")] == [runs["a"], runs["b"]]
    assert [r["id"] for r in ranked(cli, str(runs["b"]), str(runs["c"]))] == [runs["c"], runs["b"]]


def test_compare_table_shows_only_params_that_differ(cli, runs):
    result = cli("compare")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "accuracy" in line and "model" in line)
    assert "lr" in header and "batch_size" not in header and "optimizer" not in header
    for column in ("f1", "precision", "recall", "loss", "epochs (best)", "duration", "loss: train | val"):
        assert column in header, column
    assert "f1/cat" not in result.stdout  # per-class metrics are not columns
    assert "Ranked by test_accuracy, higher is better" in result.stdout
    assert any(ch in result.stdout for ch in "▁▂▃▄▅▆▇█")
    data = ranked(cli)
    assert all(set(r["params"]) == {"lr"} for r in data) and data[0]["params"]["lr"] == 0.01
    same = ranked(cli, str(runs["a"]), str(runs["failed"]))  # only one run ranked: nothing differs
    assert [r["id"] for r in same] == [runs["a"]] and same[0]["params"] == {}


def test_compare_warns_when_datasets_or_splits_differ(cli, runs):
    assert "not fair" not in cli("compare").output
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        add_run(reg, "vgg11", params={"lr": 0.01}, acc=0.7, loss=0.5, dataset_fp="fp-elsewhere")
        add_run(reg, "vgg13", params={"lr": 0.01}, acc=0.6, loss=0.5, split_fp="fp-split-2")
    result = cli("compare", "--format", "json")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == 5  # the warning goes to stderr: stdout stays parseable
    assert "2 different datasets" in result.stderr and "2 different train/val/test splits" in result.stderr
    table = cli("compare")
    assert table.output.index("not fair") < table.output.index("Ranked by")


def test_compare_csv_and_markdown_parse(cli, runs):
    rows = list(csv.DictReader(io.StringIO(cli("compare", "--format", "csv").stdout)))
    assert [int(r["run"]) for r in rows] == [runs["a"], runs["c"], runs["b"]]
    assert float(rows[0]["test_accuracy"]) == 0.9 and rows[0]["param:lr"] == "0.01"
    assert "param:epochs" not in rows[0]
    md = cli("compare", "--metric", "loss", "--format", "markdown").stdout.strip().splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in md)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md]
    assert len({len(row) for row in cells}) == 1
    assert cells[0][:5] == ["rank", "run", "name", "model", "loss"] and set(cells[1]) <= {"---", "---:"}
    assert [row[1] for row in cells[2:]] == [str(runs["c"]), str(runs["a"]), str(runs["b"])]


def test_compare_leaves_out_runs_without_the_metric_and_says_so(cli, runs):
    result = cli("compare", runs["a"], runs["failed"])
    assert result.exit_code == 0
    assert f"Run {runs['failed']} (tinycnn, failed) has no test_accuracy: left out." in result.stderr


# ----------------------------------------------------------------------------- errors and read-only
def test_read_only_commands_never_change_the_registry(cli, runs, tmp_path):
    before = digest()
    for args in (("list-runs",), ("list-runs", "--format", "json", "--all"), ("show", runs["a"]),
                 ("show", runs["stale"], "--format", "json"), ("compare",), ("compare", "--by", "model"),
                 ("compare", "--format", "markdown"), ("plot", "--output", tmp_path / "p.png")):
        assert cli(*args).exit_code == 0, args
        assert digest() == before, args
    stale = sqlite3.connect(f"{registry_path().as_uri()}?mode=ro", uri=True)
    assert stale.execute("SELECT status FROM runs WHERE id = ?", (runs["stale"],)).fetchone()[0] == "running"
    stale.close()


def test_read_only_commands_on_a_compacted_registry_create_no_files(cli, runs):
    with Registry.open(registry_path()) as reg:
        reg.compact()
    files = sorted(os.listdir(registry_path().parent))
    before = digest()
    assert cli("list-runs").exit_code == 0 and cli("compare").exit_code == 0 and cli("show", "1").exit_code == 0
    assert sorted(os.listdir(registry_path().parent)) == files and digest() == before


def test_bad_input_is_one_clear_line_and_leaves_the_file_alone(runs, tmp_path):
    before = digest()
    assert_one_line_error(zoo("list-runs", "--since", "last tuesday"), "--since", "2h")
    assert_one_line_error(zoo("list-runs", "--tag", "exp"), "key=value")
    assert_one_line_error(zoo("list-runs", "--status", "sleeping"), "sleeping", "completed")
    assert_one_line_error(zoo("list-runs", "--format", "xml"), "xml")
    assert_one_line_error(zoo("list-runs", "--limit", "0"), "--limit")
    assert_one_line_error(zoo("show", "42"), "No run '42'", "zoo list-runs")
    assert_one_line_error(zoo("show", "x' OR 1=1 --"), "not a run id")
    assert_one_line_error(zoo("compare", "--metric", "bleu"), "Unknown metric 'bleu'", "test_accuracy",
                          "test_f1/<class>")
    assert_one_line_error(zoo("compare", "--by", "plugin"), "--by model")
    assert_one_line_error(zoo("compare", "1", "99"), "No run '99'")
    assert_one_line_error(zoo("delete", "99", "--yes"), "No run '99'")
    assert digest() == before

    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    assert_one_line_error(zoo("--registry", text, "list-runs"), "not a SQLite database")
    assert text.read_text() == "not a database\n"
    assert_one_line_error(zoo("--registry", tmp_path / "missing.db", "list-runs"), "No registry at")
    assert_one_line_error(zoo("--registry", tmp_path / "missing.db", "delete", "1", "--yes"), "No registry at")
    assert not (tmp_path / "missing.db").exists()


def test_registry_commands_do_not_import_torch(runs, tmp_path):
    from conftest import TORCH_PROBE as probe

    for args in (["list-runs"], ["compare", "--metric", "accuracy"], ["show", "1"],
                 ["plot", "--output", str(tmp_path / "x.png")]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().endswith("NO-TORCH"), (args, done.stderr)


# ----------------------------------------------------------------------------- delete
def test_delete_asks_and_n_keeps_the_run(cli, runs):
    result = cli("delete", runs["c"], input="n\n")
    assert result.exit_code == 0 and "Nothing deleted" in result.output
    assert runs["c"] in ids_of(cli)
    assert (registry_path().parent / "registry-artifacts" / f"run-{runs['c']}" / "best.pt").exists()


def test_delete_with_confirmation_or_yes_removes_runs_and_artifacts(cli, runs):
    folder = registry_path().parent / "registry-artifacts" / f"run-{runs['c']}"
    result = cli("delete", runs["c"], input="y\n")
    assert result.exit_code == 0 and "Deleted 1 run" in result.output
    assert not folder.exists() and runs["c"] not in ids_of(cli)
    result = cli("delete", runs["a"], runs["failed"], "--yes")
    assert result.exit_code == 0 and "Deleted 2 runs" in result.output
    remaining = ids_of(cli)
    assert runs["a"] not in remaining and runs["failed"] not in remaining and runs["b"] in remaining
    assert cli("gc", "--yes").exit_code == 0  # the trash emptied: their rows go for good
    con = sqlite3.connect(registry_path())
    assert con.execute("SELECT count(*) FROM history WHERE run_id IN (?, ?)", (runs["a"], runs["c"])).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 0
    con.close()


def test_delete_refuses_a_run_that_is_still_running(runs):
    assert_one_line_error(zoo("delete", runs["running"], "--yes"), "still running")
    done = zoo("delete", runs["stale"], "--yes")  # its process is gone: it can go
    assert done.returncode == 0, done.stderr
    assert "Deleted 1 run" in done.stdout


# ----------------------------------------------------------------------------- plot
def test_plot_writes_a_figure(cli, runs, tmp_path):
    output = tmp_path / "figs" / "losses.png"
    result = cli("plot", "--output", output)
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000
    svg = tmp_path / "two.svg"
    assert cli("plot", runs["a"], runs["failed"], "-o", svg).exit_code == 0
    text = svg.read_text()
    assert "#1 resnet18 (first)" in text and f"#{runs['failed']} tinycnn" in text


def test_plot_without_matplotlib_names_the_extra(runs, tmp_path):
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if it were not installed: import matplotlib fails\n"
        "from zoo.cli import main\n"
        "sys.argv = ['zoo', 'plot', '--output', sys.argv[1]]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.png")], capture_output=True, text=True,
                          timeout=60)
    assert_one_line_error(done, "matplotlib", "pip install 'zoo-vision[plot]'")
    assert not (tmp_path / "x.png").exists()


def test_plot_before_any_run_has_test_metrics_plots_the_newest(cli, tmp_path):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        add_run(reg, "tinycnn", params={"lr": 0.01}, status="running", epochs=3)
    output = tmp_path / "early.png"
    result = cli("plot", "-o", output)
    assert result.exit_code == 0, result.output
    assert "1 run" in result.stdout and output.stat().st_size > 0


def test_user_text_is_shown_as_typed_not_as_markup(cli):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        add_run(reg, "tinycnn", params={"note": "[red]x[/red]"}, acc=0.5, loss=0.5, name="[bold]mine[/bold]")
    assert "[bold]mine[/bold]" in cli("list-runs").stdout
    assert "[red]x[/red]" in cli("show", "1").stdout


def test_read_commands_leave_garbage_collection_as_they_found_it(cli, runs):
    import gc

    assert gc.isenabled()
    assert cli("list-runs").exit_code == 0 and cli("compare").exit_code == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert cli("show", runs["a"]).exit_code == 0
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_narrow_terminals_get_fewer_columns_not_squeezed_ones(cli, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    listing = cli("list-runs").stdout
    header = "\n".join(listing.splitlines()[:2])
    for column in ("id", "model", "status", "test", "acc"):
        assert column in header
    assert "resnet18" in listing and "interrupted" in listing and "…" not in listing
    assert max(len(line) for line in listing.splitlines()) <= 60
    assert "hidden (name" in listing
    table = cli("compare").stdout
    assert "accuracy" in table and "resnet18" in table and "lr" in table and "…" not in table.split("Ranked")[0]
    assert "loss: train | val" not in table  # the sparklines go first
    assert max(len(line) for line in table.splitlines()) <= 60


# ----------------------------------------------------------------------------- review fixes
def test_80_columns_keep_every_required_column_and_say_what_is_hidden(cli, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    listing = cli("list-runs").stdout
    head = "\n".join(listing.splitlines()[:3])
    for column in ("id", "name", "model", "status", "started", "duration", "epochs", "best val", "test"):
        assert column in head, column
    assert "first" in listing and max(len(line) for line in listing.splitlines()) <= 80
    table = cli("compare").stdout
    head = "\n".join(table.splitlines()[:3])
    for column in ("run", "model", "accuracy", "f1", "precision", "recall", "loss", "epochs", "duration"):
        assert column in head, column
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "hidden (loss sparklines" in table and "--format markdown/csv" in table
    monkeypatch.setenv("COLUMNS", "200")
    wide = cli("compare", "--all").stdout  # 200 columns: everything, no caption about hidden columns
    assert "loss: train | val" in wide and "hidden" not in wide


def test_compare_marks_params_so_they_never_clash_with_metrics(cli, runs):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        first = add_run(reg, "tinycnn", params={"precision": "fp32", "epochs": 4}, acc=0.6, loss=0.5)
        second = add_run(reg, "tinycnn", params={"precision": "bf16", "epochs": 8}, acc=0.7, loss=0.5)
    table = cli("compare", first, second).stdout
    assert "param:precision" in table and "param:epochs" in table and "epochs (best)" in table
    markdown = cli("compare", first, second, "--format", "markdown").stdout.splitlines()[0]
    assert "| param:precision |" in markdown and "| precision |" in markdown


def test_compare_reads_loss_history_only_for_shown_sparklines(cli, runs, monkeypatch):
    from zoo.store import queries

    calls = []
    real = queries.histories

    def spy(conn, ids, keys=None):
        calls.append(list(ids))
        return real(conn, ids, keys)

    monkeypatch.setattr(queries, "histories", spy)
    for fmt in ("json", "csv", "markdown"):
        assert cli("compare", "--format", fmt).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    assert "loss: train" not in cli("compare").stdout
    assert calls == []
    monkeypatch.setenv("COLUMNS", "200")
    assert "loss: train | val" in cli("compare").stdout
    assert len(calls) == 1


def test_compare_with_nothing_finished_says_there_is_nothing_to_compare(cli):
    Registry.open(os.environ["ZOO_REGISTRY"]).close()
    empty = cli("compare")
    assert empty.exit_code == 0 and "No runs recorded yet" in empty.stdout
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        running = add_run(reg, "tinycnn", params={"lr": 0.01}, status="running", epochs=1)
    result = cli("compare")
    assert result.exit_code == 0 and "Nothing to compare yet" in result.stdout and "Unknown metric" not in result.output
    assert as_json(cli("compare", "--format", "json")) == []
    one = cli("compare", running)
    assert one.exit_code == 0 and f"run {running} (tinycnn, running) has no test metrics yet" in one.stdout


def test_compare_of_a_run_without_metrics_names_it_not_filters(cli, runs):
    result = cli("compare", runs["running"])
    assert result.exit_code == 0
    assert f"run {runs['running']} (tinycnn, running) has no test_accuracy yet" in result.stdout
    assert "filters" not in result.output


def test_delete_counts_each_artifact_once(cli, runs):
    result = cli("delete", runs["c"], "--yes")  # best.pt inside run-<id>/: one folder
    assert result.exit_code == 0 and "Deleted 1 run and 1 artifact folder:" in result.stdout


def test_show_rounds_throughput_and_fits_80_columns(cli, runs, monkeypatch):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        reg.log_epoch(runs["a"], 5, {"images_per_sec": 285.7531234, "seconds": 12.345, "lr": 0.000123,
                                     "train_loss": 0.5, "val_loss": 0.4, "train_acc": 0.9, "val_acc": 0.8})
    monkeypatch.setenv("COLUMNS", "80")
    out = cli("show", runs["a"]).stdout
    history = out[out.index("History"):out.index("train_loss ")]
    assert "286" in history and "285.75" not in history and "12.3" in history and "0.000123" in history
    assert "img/s" in history and "…" not in history
    assert max(len(line) for line in history.splitlines()) <= 80


def test_help_shows_the_defaults(cli):
    for command in ("compare", "plot"):
        assert "(default 20)" in cli(command, "--help").stdout


def test_plot_to_a_bad_place_is_one_clear_line(cli, runs, tmp_path):
    for target, fragment in ((Path("/proc/no-such-dir/x.png"), "Cannot write"), (tmp_path, "is a directory")):
        result = cli("plot", "-o", target)
        assert result.exit_code == 1 and fragment in result.output and "Unexpected" not in result.output
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = cli("plot", "-o", blocker / "x.png")
    assert result.exit_code == 1 and "Cannot write" in result.output and "Unexpected" not in result.output


def test_plot_without_extension_says_the_file_it_wrote(cli, runs, tmp_path):
    result = cli("plot", "-o", tmp_path / "noext")
    written = tmp_path / "noext.png"
    assert result.exit_code == 0 and f"Wrote {written} " in result.stdout
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_treats_all_nan_losses_as_no_history(cli, tmp_path):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        nan_run = reg.start_run(model="tinycnn", plugin="builtin", params={})
        for epoch in (1, 2):
            reg.log_epoch(nan_run, epoch, {"train_loss": float("nan"), "val_loss": float("nan")})
        reg.finish_run(nan_run, "failed", stop_reason="nan_loss")
    result = cli("plot", nan_run, "-o", tmp_path / "nan.png")
    assert result.exit_code == 1 and "No loss history to plot" in result.output
    assert not (tmp_path / "nan.png").exists()
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        good = add_run(reg, "resnet18", params={}, acc=0.5, loss=0.5)
    result = cli("plot", nan_run, good, "-o", tmp_path / "mixed.png")
    assert result.exit_code == 0 and "(1 run)" in result.stdout
    assert f"run {nan_run} (tinycnn, failed)" in result.output


def test_show_takes_a_uuid_prefix_of_two_hex_characters(cli):
    """`zoo show 2f`, as the 'not a run id' message promises; digits alone stay a run id (`delete 99` never
    picks a run whose uuid starts with 99)."""
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        ids = [add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0) for _ in range(4)]
    uuids = {ids[0]: "2f" + "0" * 30, ids[1]: "2a" + "1" * 30, ids[2]: "2a" + "2" * 30, ids[3]: "990011" + "3" * 26}
    with sqlite3.connect(registry_path()) as db:
        for run_id, uuid in uuids.items():
            db.execute("UPDATE runs SET uuid = ? WHERE id = ?", (uuid, run_id))

    def shown(ref):
        result = cli("show", ref, "--format", "json")
        return json.loads(result.stdout)["id"] if result.exit_code == 0 else result.output.strip()

    assert shown("2f") == shown("2F") == shown("2f00") == shown("#2f") == ids[0]
    assert shown("2a2") == ids[2] and shown(str(ids[1])) == ids[1]  # a run id is still a run id
    assert shown("990011") == ids[3]
    assert shown("2a") == ("Error: Run '2a' is ambiguous: it starts the uuid of several runs. Use the run id or "
                           "more characters of the uuid.")
    assert shown("99").startswith("Error: No run '99' in registry")
    for ref in ("zz", "f", "2g"):
        assert shown(ref).startswith(f"Error: '{ref}' is not a run id: give the number shown by `zoo list-runs` "
                                     f"(or a uuid prefix of 2 hex characters or more)."), ref
