"""Tables at 80 columns (issue 12, item 2): what tells runs apart stays, counts are integers, predict -k 10 reads."""

from __future__ import annotations

import os
import re

from test_cli_runs import add_run
from zoo.store import Registry

BREEDS = ["golden_retriever", "abyssinian", "bengal", "birman", "bombay", "british_shorthair", "egyptian_mau",
          "maine_coon", "persian", "ragdoll"]


def render(renderable, width: int = 80) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def test_predict_top_10_at_80_columns_lists_one_class_a_row_and_cuts_nothing():
    from zoo.cli.use import predictions_table

    results = [{"file": "photos/IMG_0001.jpg", "predictions": [{"class": n, "probability": 0.1} for n in BREEDS]},
               {"file": "broken.jpg", "error": "cannot identify image file"}]
    text = render(predictions_table(results, "Run 3 (resnet18) predictions", width=80))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for rank, name in enumerate(BREEDS, 1):
        assert any(name in line and f" {rank} " in line for line in text.splitlines()), name
    assert "unreadable" in text
    narrow = [{"file": "a.jpg", "predictions": [{"class": "cat", "probability": 0.9}, {"class": "dog", "probability": 0.1}]}]
    wide = render(predictions_table(narrow, "Run 3", width=80))
    assert "#2" in wide and "cat 90.0%" in wide  # what fits stays one row per file


def test_compare_puts_the_params_that_differ_before_the_other_metrics(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        for lr, acc in ((0.1, 0.9), (0.01, 0.8), (0.001, 0.7)):
            add_run(reg, "resnet18", params={"lr": lr, "batch_size": 16, "optimizer": "sgd" if lr > 0.01 else "adam"},
                    acc=acc, loss=1 - acc)
    lines = cli("compare").stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    heads = lines[1]  # the second header line: '# run model (↑) lr optimizer f1 precision recall ...'
    assert heads.index(" lr ") < heads.index(" optimizer ") < heads.index(" f1 ") < heads.index(" precision ")
    assert "0.001" in lines[5] and "adam" in lines[5]  # the params are shown, not hidden, at 80 columns


def test_counts_are_integers_in_show(cli):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        run = add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0)
        reg.add_evaluation(run, {"test_accuracy": 0.5, "images": 360.0}, dataset="/data/more",
                           dataset_fingerprint="fp", confusion=[[180, 0], [180, 0]], classes=["cat", "dog"])
    out = cli("show", run).stdout
    assert "360" in out and "360.0000" not in out


def test_delete_asks_about_one_run_in_the_singular(cli):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        run = add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0)
        add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0)
    assert "Delete 1 run and its artifacts?" in cli("delete", run, input="n\n").output
    assert "Delete 2 runs and their artifacts?" in cli("delete", run, run + 1, input="n\n").output


def _outcome(run_id, model, accuracy, **spec):
    from types import SimpleNamespace

    from zoo.vocab import Status

    return SimpleNamespace(run_id=run_id, model=model, planned=SimpleNamespace(spec=SimpleNamespace(**spec)),
                           status=Status.COMPLETED, stop_reason="max_epochs", best_epoch=3, epochs_run=4,
                           seconds=125.0, metrics={"test_accuracy": accuracy, "test_f1": 0.4, "test_loss": 0.7})


def test_train_summary_never_cuts_the_model_or_run_at_80_columns():
    from zoo.cli.progress import summary_table

    two = [_outcome(1001, "convnext_small", 0.51), _outcome(1002, "tinycnn", 0.5)]
    text = render(summary_table(two, ["model"], width=80))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in text
    assert "1001  convnext_small" in text and "1002  tinycnn" in text
    assert "0.5100" in text and "max_epochs" in text and "2m 05s" in text  # it fits: nothing else folds either
    grid = [_outcome(1000 + i, m, 0.5, lr=lr, batch_size=16, optimizer="adamw")
            for i, (m, lr) in enumerate([("convnext_small", 0.001), ("tinycnn", 0.1)])]
    for width in (80, 60):
        text = render(summary_table(grid, ["lr", "batch_size", "optimizer", "model"], width=width), width=width)
        assert all(len(line) <= width for line in text.splitlines()) and "…" not in text
        assert "1000  convnext_small" in text and "1001  tinycnn" in text


def test_train_grid_summary_at_80_columns_shows_each_model_whole(cli, make_images, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    images = make_images({"cat": 20, "dog": 20}, size=16)
    result = cli("train", "tinycnn", "--data", images, "--image-size", "16", "--epochs", "1", "--quiet",
                 "--lr", "0.1,0.01", "--optimizer", "sgd,adamw", "--batch-size", "8,16")
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("Trained in this command"):]
    assert "…" not in table and all(len(line) <= 80 for line in table.splitlines())
    rows = [line for line in table.splitlines() if " tinycnn " in line]
    assert len(rows) == 8 and all(re.search(r"\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}", row) for row in rows)
