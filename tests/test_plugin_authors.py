"""Issue 12, item 6: what plugin authors get told (unknown hooks, slow imports, the metadata defaults, and runs
whose plugin is no longer loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_plugins import TINYTEST, plugin_dir, run_zoo, write_plugin  # noqa: F401  (plugin_dir: a fixture)
from zoo.plugins import build_plugins, hook_names

ROOT = Path(__file__).resolve().parents[1]

MISNAMED = '''
    import zoo

    @zoo.hookimpl
    def register_model(register):
        register("never", lambda *, num_classes, pretrained=False: None)
'''


def test_hook_names_are_the_hookspecs():
    assert hook_names() == ["register_callbacks", "register_commands", "register_datasets", "register_losses",
                            "register_metrics", "register_models", "register_optimizers", "register_schedules"]


def test_a_hookimpl_that_is_no_zoo_hook_is_a_warning_naming_the_valid_hooks(plugin_dir):
    write_plugin(plugin_dir, "misnamed", MISNAMED)
    record = next(r for r in build_plugins().records if r.name == "misnamed")
    assert (record.error, record.hooks, record.unknown_hooks) == (None, [], ["register_model"])
    env = {"ZOO_PLUGINS_DIR": str(plugin_dir), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"}
    result = run_zoo("models", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "misnamed" in line]
    assert len(warning) == 1 and warning[0].startswith("Warning: Plugin 'misnamed'")
    assert "'register_model', which is not a zoo hook" in warning[0]
    assert ", ".join(hook_names()) in warning[0]
    assert "never" not in {row["name"] for row in json.loads(result.stdout)}
    rows = json.loads(run_zoo("plugins", "--format", "json", env=env).stdout)
    assert next(r for r in rows if r["name"] == "misnamed")["unknown_hooks"] == ["register_model"]


def test_plugins_shows_import_times_and_flags_slow_ones(plugin_dir, cli):
    write_plugin(plugin_dir, "sleepy", "import time\ntime.sleep(0.15)\n" + TINYTEST)
    write_plugin(plugin_dir, "quick", TINYTEST.replace("tinytest", "quicktest"))
    rows = {r["name"]: r for r in json.loads(cli("plugins", "--format", "json").stdout)}
    assert rows["sleepy"]["import_s"] >= 0.15 and rows["sleepy"]["slow"] is True
    assert rows["quick"]["import_s"] < 0.1 and rows["quick"]["slow"] is False
    assert all(isinstance(r["import_s"], float) for r in rows.values())
    out = cli("plugins").stdout
    assert re.search(r"sleepy .* 0\.1\d\d s slow", out)
    assert "slow: sleepy took over 0.1 s to import, which every zoo command pays" in " ".join(out.split())


def test_a_plugin_importing_torch_at_module_level_is_told_so(plugin_dir):
    write_plugin(plugin_dir, "heavy", "import torch\n" + TINYTEST)
    env = {"ZOO_PLUGINS_DIR": str(plugin_dir), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0", "COLUMNS": "100"}
    result = run_zoo("plugins", "--format", "json", env=env)
    heavy = next(r for r in json.loads(result.stdout) if r["name"] == "heavy")
    assert heavy["slow"] is True and "torch" in heavy["imports"]
    table = " ".join(run_zoo("plugins", env=env).stdout.split())
    assert "'heavy' imports torch" in table and "at module level: import it inside the builder" in table


def test_plugins_table_at_80_columns_wraps_hook_and_module_names(plugin_dir, cli, monkeypatch):
    deep = plugin_dir / "a-rather-long-folder-name-for-plugins" / "and-another-level"
    write_plugin(deep, "tinytest", TINYTEST)
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(deep))
    monkeypatch.setenv("COLUMNS", "80")
    lines = cli("plugins").stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    text = "\n".join(lines)
    assert "…" not in text
    left, right = lines[1].index("hooks"), lines[1].index("source")  # the hooks column, folded: nothing lost
    hooks = "".join(re.split(r"\s{2,}", line[left:right].strip())[0] for line in lines[2:] if len(line) > left)
    for hook in ("register_models:", "register_datasets:", "register_optimizers:"):
        assert hook in hooks, hooks
    start = lines[1].index("source")  # the source column: its kind, then the module or file, folded
    folded = "".join(line[start:].strip() for line in lines[2:] if len(line) > start)
    assert str(deep / "tinytest.py") in folded and "zoo_builtin_plugins.torchvision_models" in folded


def test_readme_lists_the_defaults_of_every_metadata_a_plugin_may_leave_out():
    from zoo.models import ModelInfo

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing a plugin", 1)[1].split("\n## ", 1)[0]
    for name, spec in ModelInfo.__dataclass_fields__.items():
        if name in ("name", "builder", "plugin"):
            continue
        row = next((line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, name
        if name == "preprocess":  # a value object: the row names what it holds
            assert "ImageNet's mean/std" in row and str(spec.default.crop_fraction) in row, row
        elif name not in ("family", "source"):  # computed from the name / the plugin's name
            assert f"`{spec.default!r}`".replace("''", '""') in row, (name, row)


# --- a run whose plugin is gone -----------------------------------------------------------------------------------

SMALL = TINYTEST.replace('register("tinytest", build_tinytest)',
                         'register("tinytest", build_tinytest, min_size=8, default_size=16)')

def test_a_run_whose_plugin_is_not_loaded_says_which_plugin_to_load(plugin_dir, cli, make_images, monkeypatch,
                                                                     tmp_path):
    write_plugin(plugin_dir, "tinytest", SMALL)
    images = make_images({"cat": 6, "dog": 6}, size=16)
    result = cli("train", "tinytest", "--data", images, "--image-size", "16", "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    photo = next(images.glob("cat/*.jpg"))

    import zoo.plugins

    def after(**env):
        for key in ("ZOO_PLUGINS_DIR", "ZOO_BLOCK_PLUGINS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        zoo.plugins.reset()
        outputs = []
        for args in (("evaluate", "1"), ("predict", "1", photo), ("export", "1", "-o", tmp_path / "m.pt2")):
            done = cli(*args)
            assert done.exit_code == 1, done.output
            outputs.append(done.output.strip())
        assert len(set(outputs)) == 1 and len(outputs[0].splitlines()) == 1, outputs
        assert "Did you mean" not in outputs[0]
        return outputs[0]

    gone = after()
    assert gone.startswith("Error: Model 'tinytest' comes from plugin 'tinytest', which is not loaded.")
    assert "ZOO_PLUGINS_DIR" in gone and "pip install" in gone and "entry point 'tinytest' in group 'zoo'" in gone
    blocked = after(ZOO_PLUGINS_DIR=str(plugin_dir), ZOO_BLOCK_PLUGINS="other,tinytest")
    assert "which ZOO_BLOCK_PLUGINS skips; remove 'tinytest' from ZOO_BLOCK_PLUGINS" in blocked
    write_plugin(plugin_dir, "tinytest", SMALL.replace('register("tinytest"', 'register("tinytest2"'))
    renamed = after(ZOO_PLUGINS_DIR=str(plugin_dir))
    assert "which is loaded but no longer registers 'tinytest'" in renamed
    write_plugin(plugin_dir, "tinytest", "raise ImportError('no module named tinylib')\n")
    broken = after(ZOO_PLUGINS_DIR=str(plugin_dir))
    assert "which failed to load (ImportError: no module named tinylib)" in broken
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    write_plugin(plugin_dir, "tinytest", SMALL)
    zoo.plugins.reset()
    assert "ZOO_DISABLE_PLUGIN_AUTOLOAD is set" in cli("predict", "1", photo).output
