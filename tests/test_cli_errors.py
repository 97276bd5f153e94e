"""Mistyped command lines and odd user text: one red line, exit code 1, text shown as typed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, expected", [
    (["train", "tinycnn", "--workers", "-1"], "Invalid value for '--workers'"),
    (["list-runs", "--limit", "abc"], "Invalid value for '--limit'"),
    (["export", "1"], "Missing option '--output'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["--bogus", "list-runs"], "No such option: --bogus"),
])
def test_usage_errors_are_one_line_and_exit_1(cli, args, expected):
    result = cli(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and expected in lines[0] and "--help" in lines[0]


def test_command_without_arguments_still_shows_help(cli):
    result = cli("train")
    assert "Usage:" in result.output and "--epochs" in result.output


def test_user_text_is_never_markup_or_emoji(cli, tmp_path):
    from zoo.store import Registry

    Registry.open(str(tmp_path / "registry.db")).close()  # an empty registry: the run id is what is wrong
    result = cli("show", ":smile:")
    assert result.exit_code == 1 and "':smile:'" in result.output
    result = cli("train", "tinycnn", "--data", str(tmp_path / "b[red]x[/]"), "--split", "a:b:c")
    assert result.exit_code == 1
    assert "'a:b:c'" in result.output or "b[red]x[/]" in result.output


def test_missing_plugin_folder_is_reported(tmp_path):
    env = {**os.environ, "ZOO_PLUGINS_DIR": str(tmp_path / "nope"), "ZOO_DISABLE_PLUGIN_AUTOLOAD": ""}
    out = subprocess.run([sys.executable, "-m", "zoo", "plugins", "--format", "json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "does not exist" in out.stderr and str(tmp_path / "nope") in out.stderr


def test_catalog_caption_counts_in_words(cli):
    assert "1 model;" in cli("models", "alexnet*").output
    assert "1 models" not in cli("models", "alexnet*").output
