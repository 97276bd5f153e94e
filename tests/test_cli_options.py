"""The run options of `zoo train` and `zoo tune` are made from RunSpec's field metadata (issue 18, item 6): a
parameter is declared once, in zoo/spec.py, and the commands list it with its help, type and grid-ability."""

from __future__ import annotations

import os

import typer

from zoo import spec as specs
from zoo.cli import app, options
from zoo.store import Registry


def params_of(*path: str) -> dict:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p for p in command.params}


def test_every_runspec_option_is_a_train_option_with_the_fields_help_and_kind():
    params = params_of("train")
    for name in specs.OPTIONS:
        param = params[name]
        flag = specs.option_flag(name)
        assert flag in param.opts, name
        if name == "weights":  # the command's own: --weights MODEL=FILE gives each model its file
            assert param.multiple
            continue
        assert param.help.startswith(specs.help_of(name)), name
        if specs.kind(name) is bool:
            assert param.secondary_opts == ["--no-" + flag[2:]] and "Grid" not in param.help, name
        elif name in specs.GRID_OPTIONS:
            assert param.multiple and param.help.endswith("Grid: comma list or repeat."), name
        else:
            assert not param.multiple and "Grid" not in param.help, name
    assert params["data"].opts == ["--data", "-d"] and params["workers"].min == 0
    assert "from the recipe: seed 0.001, scratch 0.05" in params["lr"].help
    names = list(params)
    assert names[names.index("seed"):names.index("seed") + 3] == ["seed", "seeds", "split_seed"]  # as before


def test_every_grid_option_is_a_tune_search_option_from_the_same_metadata():
    params = params_of("tune", "run")
    for name in specs.GRID_OPTIONS:
        assert params[name].opts == [specs.option_flag(name)] and params[name].multiple, name
        assert params[name].help.startswith(specs.help_of(name) + " Search: "), name
    assert params["lr"].help.endswith("a range LOW..HIGH (log scale), a list A,B or one value.")
    for name in ("data", "workers", "strict"):  # the fixed ones tune shares with train
        assert params[name].help.startswith(specs.help_of(name)), name


def test_a_new_field_with_metadata_is_an_option_of_train_and_tune(monkeypatch):
    new = specs._opt(None, minimum=0.0, maximum=1.0, log=True, metavar="DECAY", help="Decay of a new average.")
    new.name, new.type = "new_decay", "Optional[float]"
    monkeypatch.setitem(specs._FIELDS, "new_decay", new)
    train = options.train_option("new_decay").default
    assert train.param_decls == ("--new-decay",) and train.metavar == "DECAY[,DECAY...]"
    assert train.help == "Decay of a new average. Grid: comma list or repeat."
    search = options.search_option("new_decay").default
    assert search.param_decls == ("--new-decay",)
    assert search.help == "Decay of a new average. Search: a range LOW..HIGH (log scale), a list A,B or one value."
    flag = specs._opt(None, help="Turn a new thing on.")
    flag.name, flag.type = "new_flag", "Optional[bool]"
    monkeypatch.setitem(specs._FIELDS, "new_flag", flag)
    assert options.train_option("new_flag").default.param_decls == ("--new-flag/--no-new-flag",)
    assert options.command_order(["seed", "new_decay", "split_seed"]) == ["seed", "split_seed", "new_decay"]


def test_grid_axes_vary_in_the_order_they_always_did(cli, make_images):
    """--split-seed is the last field (its params row comes last) but its axis follows --seed's, as before."""
    images = make_images({"cat": 6, "dog": 6}, size=20)
    result = cli("train", "tinycnn", "--data", images, "--augment", "seed,none", "--split-seed", "5,6", "--seed",
                 "1,2", "--image-size", "16", "--queue")
    assert result.exit_code == 0, result.output
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        rows = [reg.get_run(i).params for i in range(1, 9)]
    assert [(p["seed"], p["split_seed"], p["augment"]) for p in rows] == [
        (seed, split_seed, augment) for seed in (1, 2) for split_seed in (5, 6) for augment in ("seed", "none")]
