"""Scripting (issue 12, item 3): every run in json/csv, --limit for all formats, --registry after the command,
shell completion, and the zoo.toml config file."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


from test_cli_runs import add_run, assert_one_line_error
from zoo.store import Registry


def fill(path, n: int) -> list[int]:
    with Registry.open(str(path)) as reg:
        return [add_run(reg, "tinycnn", params={"lr": 0.01 * (i + 1)}, acc=0.5 + i / 100, loss=1.0, epochs=1)
                for i in range(n)]


def zoo_in(cwd: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess run from ``cwd``, without ZOO_REGISTRY unless ``env`` sets it."""
    base = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "ZOO_ARTIFACTS")}
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**base, "COLUMNS": "200", **(env or {})}, timeout=60)


# ----------------------------------------------------------------------------- list-runs: every run, --limit
def test_json_and_csv_list_every_matching_run_tables_keep_their_limit(cli):
    ids = fill(os.environ["ZOO_REGISTRY"], 23)
    listed = json.loads(cli("list-runs", "--format", "json").stdout)
    assert sorted(r["id"] for r in listed) == sorted(ids)  # not 20
    rows = list(csv.DictReader(io.StringIO(cli("list-runs", "--format", "csv").stdout)))
    assert len(rows) == 23
    table = cli("list-runs")
    assert "20 of 23" not in table.stdout
    assert "20 of 23 matching runs listed" in table.stderr  # notes on stderr only
    assert len(json.loads(cli("list-runs", "--format", "json", "--tag", "nope=1").stdout)) == 0


def test_limit_applies_to_every_format_and_says_what_was_left_out(cli):
    fill(os.environ["ZOO_REGISTRY"], 5)
    result = cli("list-runs", "--format", "json", "--limit", "2")
    assert len(json.loads(result.stdout)) == 2
    assert "2 of 5 matching runs listed (--limit 2)" in result.stderr
    result = cli("list-runs", "--format", "csv", "-n", "3")
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 3 and "3 of 5" in result.stderr
    result = cli("list-runs", "--format", "json", "--limit", "9")
    assert len(json.loads(result.stdout)) == 5 and result.stderr == ""  # nothing left out: no note
    assert len(json.loads(cli("list-runs", "--format", "json", "--limit", "2", "--all").stdout)) == 5


# ----------------------------------------------------------------------------- --registry after the command
def test_registry_option_after_the_command(cli, tmp_path):
    other = tmp_path / "other.db"
    ids = fill(other, 2)
    for args in (["list-runs", "--registry", other, "--format", "json"],
                 ["list-runs", "--format", "json", f"--registry={other}"],
                 ["--registry", tmp_path / "ignored.db", "list-runs", "--registry", other, "-f", "json"]):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
        assert sorted(r["id"] for r in json.loads(result.stdout)) == sorted(ids), args
    assert cli("show", ids[0], "--registry", other).exit_code == 0
    assert not (tmp_path / "ignored.db").exists()
    done = subprocess.run([sys.executable, "-m", "zoo", "list-runs", "--registry"], capture_output=True, text=True,
                          timeout=60)
    assert_one_line_error(done, "--registry")


# ----------------------------------------------------------------------------- completion
def test_shell_completion_installs_and_completes(tmp_path):
    shown = zoo_in(tmp_path, "--show-completion", "bash")
    assert shown.returncode == 0 and "_zoo_completion" in shown.stdout
    env = {"HOME": str(tmp_path), "SHELL": "/bin/bash"}
    installed = zoo_in(tmp_path, "--install-completion", "bash", env=env)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "zoo.sh"
    assert script.is_file() and str(script) in (tmp_path / ".bashrc").read_text()
    completions = zoo_in(tmp_path, env={"_ZOO_COMPLETE": "complete_bash", "COMP_WORDS": "zoo list-r", "COMP_CWORD": "1"})
    assert completions.stdout.split() == ["list-runs"]
    options = zoo_in(tmp_path, env={"_ZOO_COMPLETE": "complete_bash", "COMP_WORDS": "zoo export 1 --fo",
                                    "COMP_CWORD": "3"})
    assert "--format" in options.stdout.split() and "--force" in options.stdout.split()
    bash, zoo_exe = shutil.which("bash"), shutil.which("zoo")
    if bash and zoo_exe:  # the installed script, in a real bash, completes through the installed zoo
        probe = (f"source {script}; COMP_WORDS=(zoo un); COMP_CWORD=1; _zoo_completion zoo; echo ${{COMPREPLY[@]}}")
        done = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{Path(zoo_exe).parent}:{os.environ['PATH']}"})
        assert done.stdout.split() == ["untag"], done.stdout + done.stderr


# ----------------------------------------------------------------------------- zoo.toml
def test_config_file_here_then_user_folder(tmp_path):
    project, home = tmp_path / "project", tmp_path / "xdg"
    (project / "runs").mkdir(parents=True)
    (home / "zoo").mkdir(parents=True)
    here_ids = fill(project / "runs" / "reg.db", 2)
    user_ids = fill(tmp_path / "user.db", 3)
    env = {"XDG_CONFIG_HOME": str(home)}
    (home / "zoo" / "zoo.toml").write_text(f'registry = "{tmp_path / "user.db"}"\n')
    listed = zoo_in(project, "list-runs", "-f", "json", env=env)
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(user_ids), listed.stderr
    (project / "zoo.toml").write_text('registry = "runs/reg.db"  # relative to this file\n')
    listed = zoo_in(project, "list-runs", "-f", "json", env=env)
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(here_ids), listed.stderr
    # the environment and the command line win over the file
    listed = zoo_in(project, "list-runs", "-f", "json", env={**env, "ZOO_REGISTRY": str(tmp_path / "user.db")})
    assert len(json.loads(listed.stdout)) == 3
    listed = zoo_in(project, "--registry", tmp_path / "user.db", "list-runs", "-f", "json", env=env)
    assert len(json.loads(listed.stdout)) == 3


def test_config_artifacts_folder_is_used_and_left_as_found(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo.toml").write_text('registry = "r.db"\nartifacts = "arts"\n')
    monkeypatch.delenv("ZOO_REGISTRY")
    with Registry.open(str(tmp_path / "r.db")) as reg:
        run = add_run(reg, "tinycnn", params={}, acc=0.5, loss=1.0, epochs=1)
    folder = tmp_path / "arts" / f"run-{run}"
    folder.mkdir(parents=True)
    (folder / "best.pt").write_bytes(b"x")
    result = cli("delete", run, "--yes")
    assert result.exit_code == 0, result.output
    assert not folder.exists()  # the command looked for the run's files where zoo.toml says
    assert "ZOO_ARTIFACTS" not in os.environ


def test_bad_config_is_one_clear_line(tmp_path):
    fill(tmp_path / "registry.db", 1)
    (tmp_path / "zoo.toml").write_text('regsitry = "x.db"\n')
    assert_one_line_error(zoo_in(tmp_path, "list-runs"), "zoo.toml", "unknown key 'regsitry'", "registry")
    (tmp_path / "zoo.toml").write_text('registry = 3\n')
    assert_one_line_error(zoo_in(tmp_path, "list-runs"), "'registry' must be")
    (tmp_path / "zoo.toml").write_text('registry = "unterminated\n')
    assert_one_line_error(zoo_in(tmp_path, "list-runs"), "zoo.toml is not valid TOML", "line 1")
    (tmp_path / "zoo.toml").write_text('[train]\nepochs = 3\n')  # train defaults are the train command's
    assert zoo_in(tmp_path, "list-runs").returncode == 0


def test_config_files_merge_key_by_key(tmp_path, monkeypatch):
    from zoo.config import load_config

    user, here = tmp_path / "user.toml", tmp_path / "here" / "zoo.toml"
    here.parent.mkdir()
    user.write_text('registry = "/abs/user.db"\nartifacts = "~/arts"\n[train]\nepochs = 5\nlr = 0.1\n')
    here.write_text('artifacts = "a"\n[train]\nepochs = 7\n')
    cfg = load_config([here, user])
    assert cfg.registry == "/abs/user.db" and cfg.artifacts == str(here.parent / "a")
    assert cfg.train == {"epochs": 7, "lr": 0.1} and cfg.sources["train.epochs"] == here
    url = tmp_path / "url.toml"
    url.write_text('registry = "postgresql://u@h/db"\n')
    assert load_config([url]).registry == "postgresql://u@h/db"


# ----------------------------------------------------------------------------- help
def test_help_has_one_metavar_style_and_no_type_placeholders(cli):
    from zoo.cli import app
    from typer.main import get_command

    names = sorted(get_command(app).commands)
    assert {"tag", "untag", "rename", "note", "diff", "export", "list-runs"} <= set(names)
    for args in [[], *[[name] for name in names]]:
        result = cli(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        for placeholder in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list"):
            assert placeholder not in result.output, (args, result.output)
    predict = cli("predict", "--help").output
    assert "RUN" in predict and "IMAGES" in predict and "--device" in predict
    assert "--format  -f      FORMAT" in cli("compare", "--help").output
