"""The --where filter language: tokens, precedence, every operator on every kind of field, bad input, the CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from zoo.store import Registry, tables
from zoo.store.where import WhereError, compile_where, parse, tokenize


@pytest.fixture
def reg(tmp_path):
    """Four finished runs with metrics, params and tags, and one failed run without metrics."""
    path = tmp_path / "registry.db"
    with Registry.open(path) as writer:
        for model, acc, lr, opt, owner, f1_cat in (
            ("resnet18", 0.95, 0.01, "adamw", "alice", 0.9),
            ("resnet50", 0.85, 0.001, "sgd", "bob", 0.7),
            ("alexnet", 0.92, 0.1, "adamw", "alice", 0.5),
            ("tinycnn", 0.60, 0.01, "sgd", "carol", 0.4),
        ):
            run_id = writer.start_run(model=model, plugin="builtin", name=f"{model}-run",
                                      params={"lr": lr, "optimizer": opt, "epochs": 3, "pretrained": model != "alexnet"},
                                      tags={"owner": owner})
            writer.log_metrics(run_id, {"test_accuracy": acc, "test_f1": acc - 0.05, "test_f1/cat": f1_cat})
            writer.finish_run(run_id, "completed", epochs_run=3, best_epoch=2)
        failed = writer.start_run(model="resnet18", plugin="builtin", params={"lr": 0.5, "optimizer": "sgd"},
                                  tags={"owner": "alice"})
        writer.finish_run(failed, "failed", error="boom", epochs_run=1)
    with Registry.open(path, readonly=True) as reader:
        yield reader


def ids(reg, text: str) -> list[int]:
    with reg.connect() as conn:
        return list(conn.scalars(select(tables.runs.c.id).where(compile_where(conn, text)).order_by(tables.runs.c.id)))


def test_the_example_from_the_issue(reg):
    text = "accuracy > 0.9 and lr <= 0.01 and model glob 'resnet*' and tag.owner = 'alice' and status != failed"
    assert ids(reg, text) == [1]


@pytest.mark.parametrize("text, expected", [
    # metrics: short names, test_ keys, per-class keys, metric.KEY
    ("accuracy > 0.9", [1, 3]), ("accuracy >= 0.92", [1, 3]), ("accuracy < 0.85", [4]), ("accuracy <= 0.85", [2, 4]),
    ("accuracy = 0.6", [4]), ("accuracy != 0.6", [1, 2, 3]), ("accuracy in (0.6, 0.85)", [2, 4]),
    ("test_f1 > 0.8", [1, 3]), ("f1 > 0.8", [1, 3]), ("test_f1/cat >= 0.7", [1, 2]), ("metric.accuracy < 0.7", [4]),
    ("accuracy not in (0.6, 0.85)", [1, 3]),
    # params: numbers (0.01 = 1e-2), strings, booleans, glob, param.KEY
    ("lr = 0.01", [1, 4]), ("lr = 1e-2", [1, 4]), ("lr != 0.01", [2, 3, 5]), ("lr < 0.01", [2]), ("lr > 0.01", [3, 5]),
    ("lr in (0.1, 0.5)", [3, 5]), ("optimizer = adamw", [1, 3]), ("optimizer = 'sgd'", [2, 4, 5]),
    ("optimizer glob 'ad*'", [1, 3]), ("pretrained = false", [3]), ("param.epochs = 3", [1, 2, 3, 4]),
    ("epochs >= 3", [1, 2, 3, 4]),
    # tags
    ("tag.owner = alice", [1, 3, 5]), ("tag.owner != alice", [2, 4]), ("tag.owner in (bob, carol)", [2, 4]),
    ("tag.owner glob '?o*'", [2]), ("tags.owner > 'bob'", [4]),
    # run columns: text, glob (any case), numbers, times
    ("model = resnet18", [1, 5]), ("model glob 'RES*'", [1, 2, 5]), ("model glob '*net?0'", [2]),
    ("status = failed", [5]), ("status != completed", [5]), ("status in (failed, interrupted)", [5]),
    ("id > 3", [4, 5]), ("id in (1, 2)", [1, 2]), ("epochs_run < 2", [5]), ("name glob 'alex*'", [3]),
    ("created > 1d", [1, 2, 3, 4, 5]), ("created < 2000-01-01", []), ("created >= '2000-01-01 12:00'", [1, 2, 3, 4, 5]),
])
def test_every_operator_on_every_kind_of_field(reg, text, expected):
    assert ids(reg, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("model = alexnet or model = tinycnn and accuracy > 0.9", [3]),  # and binds tighter than or
    ("(model = alexnet or model = tinycnn) and accuracy > 0.9", [3]),
    ("model = tinycnn or model = alexnet and accuracy > 0.9", [3, 4]),
    ("(model = tinycnn or model = alexnet) and accuracy > 0.9", [3]),
    ("not model = resnet18 and tag.owner = alice", [3]),  # not binds tighter than and
    ("not (model = resnet18 and tag.owner = alice)", [2, 3, 4]),
    ("accuracy > 0.9 or status = failed", [1, 3, 5]),
    ("not accuracy > 0.9", [2, 4, 5]),  # a run without the metric: the comparison is false, its negation true
    ("((lr = 0.01))", [1, 4]),
    ("model = resnet18 AND status = failed", [5]),  # keywords in any case
])
def test_precedence_and_parentheses(reg, text, expected):
    assert ids(reg, text) == expected


def test_values_are_bound_parameters_never_sql(reg):
    assert ids(reg, "name = \"x' or 1=1 --\"") == []
    assert ids(reg, "tag.owner = 'it''s'") == []
    assert ids(reg, "model glob '100%'") == [] and ids(reg, "model glob 'res_et*'") == []  # % and _ are literal


def test_tokens():
    kinds = [(t.kind, t.text) for t in tokenize("lr<=1e-3 and tag.x!='a b' or f1/cat in (1,2)")]
    assert kinds == [("word", "lr"), ("op", "<="), ("number", "1e-3"), ("word", "and"), ("word", "tag.x"),
                     ("op", "!="), ("string", "a b"), ("word", "or"), ("word", "f1/cat"), ("word", "in"),
                     ("(", "("), ("number", "1"), (",", ","), ("number", "2"), (")", ")"), ("end", "")]
    assert [t.kind for t in tokenize("created > 2026-01-01")][-2] == "word"


@pytest.mark.parametrize("text, column, says", [
    ("accuracy >", 11, "expected a value after '>'"),
    ("accuracy > and lr < 1", 12, "expected a value after '>', found 'and'"),
    ("accuracy 0.9", 10, "expected an operator"),
    ("(accuracy > 0.9", 16, "'(' at column 1 is not closed"),
    ("accuracy > 0.9)", 15, "')' without a matching '('"),
    ("accuracy > 0.9 lr < 1", 16, "expected 'and', 'or' or the end"),
    ("accuracy ! 0.9", 10, "unexpected character '!'"),
    ("name = 'open", 8, "string not closed"),
    ("and accuracy > 1", 1, "expected a field"),
    ("", 1, "the filter is empty"),
    ("lr in 0.1", 7, "expected '(' after 'in'"),
    ("lr in (0.1 0.2)", 12, "expected ',' or ')'"),
    ("(" * 500 + "lr = 1" + ")" * 500, 21, "at most 20 nested"),
    ("not " * 30 + "lr = 1", 81, "at most 20 nested"),
    (" or ".join(["lr = 1"] * 101), 1001, "at most 100 comparisons"),
])
def test_syntax_errors_point_at_the_token(text, column, says):
    with pytest.raises(WhereError) as info:
        parse(text)
    message = str(info.value)
    assert f"column {column} " in message and says in message and "\n" not in message
    assert info.value.position == column - 1


@pytest.mark.parametrize("text, column, says", [
    ("bogus > 1", 1, "unknown field 'bogus'"),
    ("acuracy > 1", 1, "did you mean accuracy"),
    ("accuracy > high", 12, "compares with a number, not 'high'"),
    ("accuracy glob '9*'", 10, "is a number"),
    ("created > yesterday", 11, "compares with a date"),
    ("optimizer > adam", 13, "compares numbers"),
    ("model glob 'res[ab]*'", 12, "glob patterns take * and ? only"),
    ("tag. = 1", 1, "names no key"),
])
def test_name_and_type_errors_point_at_the_token(reg, text, column, says):
    with pytest.raises(WhereError) as info:
        ids(reg, text)
    assert f"column {column} " in str(info.value) and says in str(info.value)


def test_list_runs_and_compare_take_where(cli, tmp_path):
    from test_cli_runs import add_run
    import os

    with Registry.open(os.environ["ZOO_REGISTRY"]) as writer:
        a = add_run(writer, "resnet18", params={"lr": 0.01}, acc=0.9, loss=0.3, tags={"owner": "alice"})
        b = add_run(writer, "alexnet", params={"lr": 0.1}, acc=0.8, loss=0.4, tags={"owner": "bob"})
    result = cli("list-runs", "--where", "tag.owner = alice", "--format", "json")
    assert result.exit_code == 0 and [r["id"] for r in __import__("json").loads(result.stdout)] == [a]
    result = cli("compare", "--where", "lr >= 0.1", "--format", "json")
    assert result.exit_code == 0 and [r["id"] for r in __import__("json").loads(result.stdout)] == [b]
    result = cli("list-runs", "--where", "accuracy >> 1")
    assert result.exit_code == 1 and "column 11" in result.output and "Traceback" not in result.output


def test_report_takes_where(cli, tmp_path):
    pytest.importorskip("jinja2")
    from test_cli_runs import add_run
    import os

    with Registry.open(os.environ["ZOO_REGISTRY"]) as writer:
        add_run(writer, "resnet18", params={"lr": 0.01}, acc=0.9, loss=0.3, tags={"owner": "alice"})
        add_run(writer, "alexnet", params={"lr": 0.1}, acc=0.8, loss=0.4, tags={"owner": "bob"})
    result = cli("report", "--where", "tag.owner = bob", "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "alexnet" in html and "resnet18" not in html
    result = cli("report", "--where", "tag.owner = carol", "-o", str(tmp_path / "none.html"))
    assert result.exit_code == 1 and "No runs match" in result.output
