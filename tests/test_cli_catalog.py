"""`zoo models` and `zoo plugins` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoo.cli.catalog import human_count, models_table
from zoo.plugins import BUILTIN_PLUGINS, build_plugins

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def names_in_table(text: str) -> list[str]:
    """The first cell of each body row of a rendered table."""
    known = set(build_plugins(autoload=False).models().names())
    return [line.split()[0] for line in text.splitlines() if line.split() and line.split()[0] in known]


def test_models_json_lists_the_builtins(cli):
    result = cli("models", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    names = [row["name"] for row in rows]
    assert len(rows) >= 40 and len(names) == len(set(names))
    assert {"alexnet", "resnet18", "resnet34", "resnet50", "tinycnn", "vgg16", "swin_t"} <= set(names)
    alexnet = next(row for row in rows if row["name"] == "alexnet")
    assert alexnet == {"name": "alexnet", "family": "alexnet", "params": 61100840, "min_size": 63,
                       "default_size": 224, "pretrained": True, "plugin": "alexnet",
                       "description": alexnet["description"], "source": "torchvision"}
    assert names.index("resnet18") < names.index("resnet101")  # natural order


def test_models_table(cli):
    result = cli("models")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "name" in line)
    assert header.split() == ["name", "family", "params", "min", "default", "weights", "source"]
    listed = names_in_table(result.stdout)
    assert len(listed) >= 40 and listed[0] == "alexnet"
    assert listed.index("resnet18") < listed.index("resnet34") < listed.index("resnet101")
    alexnet_row = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["alexnet"])
    assert alexnet_row.split() == ["alexnet", "alexnet", "61.1M", "63", "224", "yes", "torchvision"]
    assert f"{len(listed)} models" in result.stdout


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_models_pattern_lists_only_resnets_in_natural_order(cli, fmt):
    result = cli("models", "resnet*", "--format", fmt)
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(result.stdout)] if fmt == "json" else names_in_table(result.stdout)
    assert names == RESNETS


def test_models_pattern_is_case_insensitive_and_shell_style(cli):
    assert [r["name"] for r in json.loads(cli("models", "ResNet1*", "-f", "json").stdout)] == [
        "resnet18", "resnet101", "resnet152"]
    assert [r["name"] for r in json.loads(cli("models", "vit_?_16", "-f", "json").stdout)] == [
        "vit_b_16", "vit_l_16"]


def test_models_pattern_matching_nothing_is_an_error(cli):
    result = cli("models", "resnet19")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: No model matches 'resnet19'. Did you mean: resnet18, resnet152, resnet101? "
        "Run 'zoo models' to see them all."]
    result = cli("models", "zz*", "--format", "json")
    assert result.exit_code == 1 and result.stdout == "" and "No model matches 'zz*'" in result.output


@pytest.mark.parametrize("command", ["models", "plugins"])
def test_unknown_format_is_a_one_line_error(cli, command):
    result = cli(command, "--format", "yaml")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: Unknown --format 'yaml': choose one of table, json."]


def test_plugins_json_and_table(cli):
    result = cli("plugins", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == list(BUILTIN_PLUGINS)
    from zoo import __version__

    for row in rows:
        assert (row["source"], row["version"], row["error"]) == ("built-in", __version__, None)
        assert row["location"] == f"zoo_builtin_plugins.{row['name']}"
    assert next(row for row in rows if row["name"] == "resnet")["hooks"] == ["register_models"]
    table = cli("plugins").stdout
    assert table.split("\n")[1].split() == ["name", "version", "hooks", "import", "source"]
    assert "zoo_builtin_plugins.torchvision_models" in table and f"{len(rows)} plugins" in table


def test_human_count_and_table_renderer():
    assert [human_count(n) for n in (None, 999, 61_100_840, 2_500, 1_200_000_000)] == [
        "?", "999", "61.1M", "2.5K", "1.2G"]
    models = build_plugins(autoload=False).models()
    table = models_table([models.get(n) for n in RESNETS])
    assert table.row_count == 5 and [c.header for c in table.columns][0] == "name"


@pytest.mark.parametrize("args", [["models", "--format", "json"], ["models"], ["plugins"]])
def test_catalog_commands_import_no_torch(args):
    """The real entry point (main(), plugins loaded) lists architectures without importing torch."""
    code = (
        "import sys\nfrom zoo.cli import main\ncode = None\n"
        f"sys.argv = ['zoo', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('EXIT', code, 'TORCH', [m for m in ('torch', 'torchvision') if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 0 TORCH []" in done.stderr, done.stderr
    assert "resnet" in done.stdout
