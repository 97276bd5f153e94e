"""User text that must stay text (issue 11): terminal control characters in names shown escaped, '$' in plots,
a plugin that calls sys.exit(), a raw pickle given as weights, and the status of a run whose process died."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from zoo.store import Registry

ESC = "\x1b"
EVIL = "\x1b]0;pwned\x07\x1b[2J"  # set the window title, clear the screen
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def add_run(reg, *, model="tinycnn", name=None, classes=("cat", "dog"), params=None, tags=None, acc=None,
            status="completed", error=None) -> int:
    run_id = reg.start_run(model=model, plugin="builtin", params=params or {"lr": 0.01}, name=name, device="cpu",
                           tags=tags, dataset={"path": "/data/x", "fingerprint": "fp", "split_fingerprint": "sp",
                                               "classes": list(classes), "train_size": 8, "val_size": 1,
                                               "test_size": 1})
    for epoch in (1, 2):
        reg.log_epoch(run_id, epoch, {"train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch})
    if acc is not None:
        reg.log_metrics(run_id, {"test_accuracy": acc, "test_loss": 0.5, "test_f1": acc}, confusion=[[1, 0], [0, 1]])
    if status != "running":
        reg.finish_run(run_id, status, stop_reason="max_epochs" if status == "completed" else "error",
                       best_epoch=2, epochs_run=2, error=error)
    return run_id


@pytest.fixture
def evil_runs() -> dict[str, int]:
    """Runs whose every user-given text carries escape sequences; and one with a second param value to compare."""
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        return {
            "evil": add_run(reg, model=f"tiny{EVIL}cnn", name=f"run{EVIL}", classes=(f"cat{EVIL}", "dog"),
                            params={f"lr{EVIL}": f"0.1{EVIL}"}, tags={f"k{EVIL}": f"v{EVIL}"}, acc=0.9),
            "failed": add_run(reg, name="plain", params={f"lr{EVIL}": "0.2"}, acc=0.5, status="failed",
                              error=f"boom{EVIL}"),
        }


def assert_escaped(text: str) -> None:
    assert ESC not in text and "\x07" not in text, repr(text)
    assert SHOWN in text, text


@pytest.mark.parametrize("args", [
    ("list-runs",), ("list-runs", "--format", "csv"), ("list-runs", "--format", "json"),
    ("show", "{evil}"), ("show", "{failed}"), ("show", "{evil}", "--format", "json"),
    ("compare",), ("compare", "--format", "markdown"), ("compare", "--format", "csv"),
])
def test_control_characters_in_user_text_are_shown_escaped(cli, evil_runs, args):
    result = cli(*[a.format(**evil_runs) for a in args])
    assert result.exit_code == 0, result.output
    if "json" in args:
        assert ESC not in result.output and "\\u001b" in result.output  # JSON escapes them itself
    else:
        assert_escaped(result.output)


def test_warnings_and_errors_show_user_text_escaped(cli, evil_runs):
    result = cli("show", f"nope{EVIL}")
    assert result.exit_code == 1
    assert_escaped(result.output)
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        add_run(reg, model=f"other{EVIL}", acc=None, status="failed")
    result = cli("compare", "--format", "markdown")  # warns about the run lacking the metric, naming its model
    assert result.exit_code == 0 and ESC not in result.output


def test_escaping_keeps_the_table_layout(cli, evil_runs):
    lines = [line for line in cli("list-runs").stdout.splitlines() if line.startswith(("┃", "│"))]
    from rich.cells import cell_len

    assert len({cell_len(line) for line in lines}) == 1  # every row as wide as the header: nothing misaligned


def test_printable_shows_undecodable_bytes_as_bytes():
    from zoo.errors import printable

    assert printable(os.fsdecode(b"caf\xe9\x1b.jpg")) == "caf\\xe9\\x1b.jpg"
    assert printable("two\nlines\tand\x9b", keep_lines=True) == "two\nlines\tand\\x9b"
    assert printable("naïve ✓") == "naïve ✓"


# ------------------------------------------------------------------------------------------------ plot


def test_plot_shows_dollar_signs_literally(cli, tmp_path):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        add_run(reg, name=r"$\frac{$", acc=0.8)
        add_run(reg, name="fine", model="alexnet", acc=0.7)
    import matplotlib.text

    drawn: list[str] = []
    original = matplotlib.text.Text.draw

    def draw(self, renderer):
        if "frac" in self.get_text():
            drawn.append(self._preprocess_math(self.get_text())[1])  # whether it would be parsed as mathtext
        return original(self, renderer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.text.Text, "draw", draw)
        result = cli("plot", "--output", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert drawn and not any(drawn)  # the legend entry was drawn, as plain text


# ------------------------------------------------------------------------------------------------ plugins


def write_plugin(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    directory = tmp_path / "zoo-plugins"
    directory.mkdir()
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(directory))
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")
    return directory


def test_a_plugin_calling_sys_exit_at_import_is_a_broken_plugin(plugin_dir):
    from zoo.plugins import build_plugins

    write_plugin(plugin_dir, "quitter", "import sys\nsys.exit(0)\n")
    plugins = build_plugins()
    [failed] = plugins.failures
    assert failed.name == "quitter" and "sys.exit(0)" in failed.error
    assert "tinycnn" in plugins.models()


def test_sys_exit_at_import_through_the_real_cli(plugin_dir):
    write_plugin(plugin_dir, "quitter", "import sys\nsys.exit(3)\n")
    env = dict(os.environ, COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "zoo", "models", "tiny*"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tinycnn" in done.stdout
    assert "Plugin 'quitter'" in done.stderr and "sys.exit(3)" in done.stderr


def test_sys_exit_inside_a_hook_is_named_not_an_exit(plugin_dir, cli):
    write_plugin(plugin_dir, "quitter", '''
        import sys
        import zoo

        @zoo.hookimpl
        def register_models(register):
            sys.exit("bye")
    ''')
    result = cli("models")
    assert result.exit_code == 0 and "tinycnn" in result.stdout  # the plugin is skipped, the rest work
    assert "Plugin 'quitter' failed in register_models: it called sys.exit('bye')" in result.stderr


def test_sys_exit_in_register_commands_leaves_the_other_commands(plugin_dir):
    write_plugin(plugin_dir, "quitter", '''
        import sys
        import zoo

        @zoo.hookimpl
        def register_commands(app):
            sys.exit(0)
    ''')
    done = subprocess.run([sys.executable, "-m", "zoo", "models", "tiny*"], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), timeout=60)
    assert done.returncode == 0 and "tinycnn" in done.stdout, done.stderr
    assert "Plugin 'quitter' failed in register_commands: it called sys.exit(0)" in done.stderr


# ------------------------------------------------------------------------------------------------ weights


class Payload:
    """Stands for whatever object a hostile pickle would build."""


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_raw_pickle_as_weights_is_one_line_without_torchs_advice(cli, make_images, tmp_path, kind):
    data = make_images({"cat": 4, "dog": 4}, size=16)
    weights = tmp_path / "weights.pkl"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    else:
        import torch

        torch.save({"w": torch.zeros(2), "payload": Payload()}, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("train", "tinycnn", "--data", data, "--weights", weights, "--epochs", "1", "--image-size", "16")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: Cannot load") and str(weights) in lines[0], lines
    assert "weights_only=False" not in lines[0] and "set to False" not in lines[0]
    assert "add_safe_globals" not in lines[0] and "will likely succeed" not in lines[0]
    assert not [w for w in caught if "torch" in str(w.filename) or "pickle" in str(w.message)]
    if kind == "torch.save":
        assert "Payload" in lines[0]  # what was refused is named


# ------------------------------------------------------------------------------------------------ stale runs


@pytest.mark.parametrize("command", [("evaluate", "{run}"), ("predict", "{run}", "{image}"),
                                     ("export", "{run}", "-o", "{out}")])
def test_a_run_whose_process_died_is_called_stale_not_running(cli, make_images, tmp_path, command):
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        run = add_run(reg, status="running")
        reg.update_run(run, pid=dead_pid())
    image = next(make_images({"cat": 1, "dog": 1}, size=16).glob("cat/*.jpg"))
    result = cli(*[a.format(run=run, image=image, out=tmp_path / "m.pt") for a in command])
    assert result.exit_code == 1
    assert "status stale" in result.output and "running" not in result.output, result.output
