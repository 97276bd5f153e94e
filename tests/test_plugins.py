"""The plugin system: built-ins, entry points, plugin directories, blocking, errors; pretrained weight loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoo
from zoo.errors import DuplicateName, UnknownName, ZooError
from zoo.plugins import BUILTIN_PLUGINS, build_plugins

ROOT = Path(__file__).resolve().parents[1]
TORCHVISION_PLUGINS = {"alexnet", "resnet", "torchvision_models"}

# The README's plugin, as a user would write it.
TINYTEST = textwrap.dedent('''
    import zoo

    def build_tinytest(num_classes: int, pretrained: bool = False):
        from torch import nn
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    @zoo.hookimpl
    def register_models(register):
        register("tinytest", build_tinytest)
''')


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A ZOO_PLUGINS_DIR with autoloading on; write plugins into it with write_plugin()."""
    directory = tmp_path / "zoo-plugins"
    directory.mkdir()
    monkeypatch.setenv("ZOO_PLUGINS_DIR", str(directory))
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "0")
    return directory


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An uninstalled distribution 'zoo-epdemo' 1.2.3 whose entry point in group 'zoo' names module zoo_epdemo,
    found through sys.path like any installed package."""
    site = tmp_path / "site"
    (site / "zoo_epdemo-1.2.3.dist-info").mkdir(parents=True)
    (site / "zoo_epdemo-1.2.3.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: zoo-epdemo\nVersion: 1.2.3\n")
    (site / "zoo_epdemo-1.2.3.dist-info" / "entry_points.txt").write_text("[zoo]\nepdemo = zoo_epdemo\n")
    (site / "zoo_epdemo.py").write_text(textwrap.dedent('''
        import zoo

        def build_epnet(*, num_classes: int, pretrained: bool = False):
            from torch import nn
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

        @zoo.hookimpl
        def register_models(register):
            register("epnet", build_epnet, family="demo", min_size=8, default_size=16, params=None)
    '''))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "zoo_epdemo", raising=False)
    yield site
    sys.modules.pop("zoo_epdemo", None)


def run_zoo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter (plugin commands and load warnings are added by main())."""
    full_env = {**os.environ, **env, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=full_env,
                          timeout=120)


# --- built-ins ---------------------------------------------------------------------------------------------------

def test_builtins_load_as_plugins():
    plugins = build_plugins(autoload=False)
    assert [r.name for r in plugins.records] == list(BUILTIN_PLUGINS)
    assert not plugins.failures
    assert all(r.source == "built-in" and r.location.startswith("zoo_builtin_plugins.") for r in plugins.records)
    models = plugins.models()
    assert len(models) >= 40
    for name in ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vit_b_16"):
        assert name in models
    assert models.get("alexnet").plugin == "alexnet" and models.get("alexnet").min_size == 63
    assert {models.get(n).plugin for n in models.names("resnet*")} == {"resnet"}
    assert models.get("vgg16").plugin == "torchvision_models"


def test_builder_signature_is_keyword_only_and_typed():
    import inspect

    builder = build_plugins(autoload=False).models().get("resnet50").builder
    params = inspect.signature(builder).parameters
    assert [p.kind for p in params.values()] == [inspect.Parameter.KEYWORD_ONLY] * 2
    assert params["num_classes"].annotation in (int, "int")
    assert params["pretrained"].default is False


def test_static_table_matches_installed_torchvision():
    """The table that lets listing skip torch agrees with torchvision's weights metadata, and covers every
    torchvision classification model."""
    import torchvision.models as tvm

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_torchvision_table as gen
    finally:
        sys.path.remove(str(ROOT / "tools"))
    models = build_plugins(autoload=False).models()
    ours = {n: models.get(n) for n in models.names() if models.get(n).plugin in TORCHVISION_PLUGINS}
    assert set(ours) == set(tvm.list_models(module=tvm))
    expected = {row[0]: row for row in gen.rows()}
    for name, info in ours.items():
        _, family, params, min_size, default_size, weights, _ = expected[name]
        meta = tvm.get_model_weights(name)[weights].meta
        assert (info.params, info.min_size, info.default_size, info.family) == (params, min_size, default_size,
                                                                                family), name
        assert info.params == meta["num_params"] and info.pretrained
    table_file = ROOT / "plugins" / "torchvision_models.py"
    assert gen.render(gen.rows()) in table_file.read_text(), "stale: run python tools/gen_torchvision_table.py"


def test_loading_plugins_and_listing_models_imports_no_torch():
    code = ("import sys; from zoo.plugins import build_plugins; p = build_plugins(autoload=False); "
            "n = len(p.models()); print(n, [m for m in ('torch', 'torchvision') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) >= 40 and out[1].strip() == "[]"


# --- third-party plugins ---------------------------------------------------------------------------------------

def test_entry_point_plugin_is_discovered(fake_distribution):
    plugins = build_plugins(autoload=True)
    record = next(r for r in plugins.records if r.name == "epdemo")
    assert (record.source, record.version, record.error) == ("entry point", "1.2.3", None)
    assert "zoo_epdemo" in record.location and "zoo-epdemo" in record.location
    assert record.hooks == ["register_models"]
    info = plugins.models().get("epnet")
    assert (info.plugin, info.family, info.min_size) == ("epdemo", "demo", 8)


def test_directory_plugin_in_models_and_plugins(plugin_dir, cli):
    path = write_plugin(plugin_dir, "tinytest", TINYTEST)
    result = cli("models", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tinytest"]["plugin"] == "tinytest" and "resnet18" in rows
    result = cli("plugins", "--format", "json")
    plugin = next(p for p in json.loads(result.stdout) if p["name"] == "tinytest")
    assert (plugin["source"], plugin["location"], plugin["error"]) == ("directory", str(path), None)
    assert plugin["hooks"] == ["register_models"]
    table = cli("plugins").stdout
    assert "tinytest" in table and "directory" in table


def test_directory_plugin_model_builds_and_runs(plugin_dir):
    import torch

    write_plugin(plugin_dir, "tinytest", TINYTEST)
    model = build_plugins().models().get("tinytest").build(num_classes=3)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_disable_autoload_ignores_entry_points_and_directories(plugin_dir, fake_distribution, monkeypatch):
    write_plugin(plugin_dir, "tinytest", TINYTEST)
    assert {"tinytest", "epdemo"} <= {r.name for r in build_plugins().records}  # both found when enabled
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = build_plugins()
    assert [r.name for r in plugins.records] == list(BUILTIN_PLUGINS)
    assert "tinytest" not in plugins.models() and "epnet" not in plugins.models()


def test_block_plugins(plugin_dir, monkeypatch, cli):
    write_plugin(plugin_dir, "tinytest", TINYTEST)
    monkeypatch.setenv("ZOO_BLOCK_PLUGINS", "resnet, tinytest")
    plugins = build_plugins()
    assert {"resnet", "tinytest"}.isdisjoint(r.name for r in plugins.records)
    assert "alexnet" in plugins.models() and "resnet18" not in plugins.models()
    names = [row["name"] for row in json.loads(cli("models", "--format", "json").stdout)]
    assert "resnet50" not in names and "tinytest" not in names and "vgg11" in names


def test_duplicate_name_names_both_plugins(plugin_dir, cli):
    write_plugin(plugin_dir, "myresnet", '''
        import zoo

        @zoo.hookimpl
        def register_models(register):
            register("resnet18", lambda *, num_classes, pretrained=False: None)
    ''')
    with pytest.raises(DuplicateName, match="'resnet18'.*'resnet'.*'myresnet'"):
        build_plugins().models()
    result = cli("models")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "resnet18" in lines[0] and "'resnet'" in lines[0] and "'myresnet'" in lines[0]


def test_unknown_name_suggests_close_ones():
    models = build_plugins(autoload=False).models()
    with pytest.raises(UnknownName, match="Did you mean: resnet18"):
        models.get("resnet19")
    with pytest.raises(UnknownName, match="vgg16"):
        models.get("vgg61")
    assert models.get("ResNet18").name == "resnet18"  # case does not matter


def test_broken_plugin_is_reported_and_the_rest_load(plugin_dir):
    write_plugin(plugin_dir, "broken", 'raise RuntimeError("boom at import")\n')
    write_plugin(plugin_dir, "tinytest", TINYTEST)
    plugins = build_plugins()
    [failed] = plugins.failures
    assert failed.name == "broken" and failed.error == "RuntimeError: boom at import"
    assert failed.location.endswith("broken.py")
    assert "tinytest" in plugins.models() and "resnet18" in plugins.models()


def test_broken_plugin_through_the_real_cli(plugin_dir):
    write_plugin(plugin_dir, "broken", 'raise RuntimeError("boom at import")\n')
    write_plugin(plugin_dir, "tinytest", TINYTEST)
    env = {"ZOO_PLUGINS_DIR": str(plugin_dir), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"}
    result = run_zoo("models", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert "Plugin 'broken'" in result.stderr and "RuntimeError: boom at import" in result.stderr
    assert "tinytest" in {row["name"] for row in json.loads(result.stdout)}
    result = run_zoo("plugins", "--format", "json", env=env)
    broken = next(p for p in json.loads(result.stdout) if p["name"] == "broken")
    assert broken["error"] == "RuntimeError: boom at import" and broken["source"] == "directory"


def test_plugin_failing_inside_its_hook_is_named(plugin_dir, cli):
    write_plugin(plugin_dir, "buggy", '''
        import zoo

        @zoo.hookimpl
        def register_models(register):
            register("fine", lambda *, num_classes, pretrained=False: None)
            {}["missing"]
    ''')
    plugins = build_plugins()
    models = plugins.models()  # the broken plugin is skipped whole (its 'fine' too); the others work
    assert "fine" not in models and "tinycnn" in models
    assert next(r for r in plugins.records if r.name == "buggy").error.startswith(
        "register_models: Plugin 'buggy' failed in register_models: KeyError")
    result = cli("models")
    assert result.exit_code == 0 and "tinycnn" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "Plugin 'buggy' failed in register_models: KeyError" in warnings[0]


def test_register_rejects_bad_metadata(plugin_dir):
    write_plugin(plugin_dir, "badmeta", '''
        import zoo

        @zoo.hookimpl
        def register_models(register):
            register("odd", lambda *, num_classes, pretrained=False: None, colour="red", plugin="someone-else")
    ''')
    plugins = build_plugins()
    assert "odd" not in plugins.models() and "tinycnn" in plugins.models()
    assert "'badmeta' registered model 'odd' with unknown metadata: colour, plugin" in next(
        r for r in plugins.records if r.name == "badmeta").error


def test_plugin_command_works_through_the_real_cli(plugin_dir):
    write_plugin(plugin_dir, "greeter", '''
        import typer
        import zoo

        @zoo.hookimpl
        def register_commands(app):
            @app.command("hello")
            def hello(name: str = typer.Option("world", help="whom to greet")):
                """Say hello."""
                typer.echo(f"hello {name}")
    ''')
    env = {"ZOO_PLUGINS_DIR": str(plugin_dir), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"}
    result = run_zoo("hello", "--name", "zoo", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello zoo"
    assert "hello" in run_zoo("--help", env=env).stdout
    assert run_zoo("hello", env={**env, "ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}).returncode != 0


def test_hook_with_fewer_arguments_than_the_spec(plugin_dir):
    write_plugin(plugin_dir, "minimal", '''
        import zoo

        CALLS = []

        @zoo.hookimpl
        def register_models():
            CALLS.append("register_models")

        @zoo.hookimpl
        def register_commands():
            CALLS.append("register_commands")
    ''')
    plugins = build_plugins()
    record = next(r for r in plugins.records if r.name == "minimal")
    assert record.error is None and record.hooks == ["register_commands", "register_models"]
    plugins.models()
    plugins.register_commands(app=None)
    assert sys.modules["zoo_dir_plugin_minimal"].CALLS == ["register_models", "register_commands"]


def test_a_ctrl_c_caught_by_zoo_exits_130_even_when_it_left_exec_d_code(plugin_dir):
    """A KeyboardInterrupt that passes through code compiled by exec() (dataclasses' generated methods, while torch
    imports at start-up) is marked unhandled by CPython, which then ends the process by SIGINT (-2) instead of the
    exit code zoo chose. Made here by a plugin command whose Ctrl-C comes out of exec()."""
    write_plugin(plugin_dir, "execint", '''
        import zoo

        @zoo.hookimpl
        def register_commands(app):
            @app.command("execint")
            def execint():
                """Raise Ctrl-C from exec'd code."""
                exec("raise KeyboardInterrupt")
    ''')
    result = run_zoo("execint", env={"ZOO_PLUGINS_DIR": str(plugin_dir), "ZOO_DISABLE_PLUGIN_AUTOLOAD": "0"})
    assert result.returncode == 130, (result.returncode, result.stderr)  # was -2: killed by its own SIGINT
    assert "Traceback" not in result.stderr


def test_public_api_for_plugin_authors():
    assert zoo.hookimpl is not None and issubclass(zoo.ZooError, Exception)
    assert {"name", "family", "min_size", "default_size", "pretrained", "params"} <= set(
        zoo.ModelInfo.__dataclass_fields__)


# --- pretrained weights ------------------------------------------------------------------------------------------

@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; any download attempt fails as it would offline (tests never hit the network)."""
    import urllib.error

    import torch.hub

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return home


def test_pretrained_offline_error_says_where_the_file_goes(offline_torch_home, cli):
    info = build_plugins(autoload=False).models().get("resnet18")
    expected = offline_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ZooError) as caught:
        info.build(num_classes=3, pretrained=True)
    message = caught.value.format_message()
    assert "'resnet18'" in message and str(expected) in message and "--weights FILE" in message
    assert "\n" not in message and not expected.exists()


def test_pretrained_loads_from_the_cache_and_replaces_the_classifier(offline_torch_home):
    import torch
    import torchvision

    reference = torchvision.models.resnet18(num_classes=1000).state_dict()
    cache = offline_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference, cache / "resnet18-f37072fd.pth")

    model = build_plugins(autoload=False).models().get("resnet18").build(num_classes=3, pretrained=True)
    assert model.fc.out_features == 3
    loaded = model.state_dict()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        if key.startswith("fc."):
            assert loaded[key].shape[0] == 3
        else:
            assert torch.equal(loaded[key], value), key
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_corrupt_cached_weights_say_so(offline_torch_home):
    cache = offline_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    info = build_plugins(autoload=False).models().get("alexnet")
    with pytest.raises(ZooError, match="Cannot load the pretrained weights of 'alexnet' from .*Delete the file"):
        info.build(num_classes=3, pretrained=True)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_pretrained_aux_models_drop_their_aux_heads(offline_torch_home, name):
    """The ImageNet files hold the auxiliary classifiers; zoo's model returns plain logits in train mode too."""
    import torch
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name).DEFAULT
    reference = tvm.get_model(name, num_classes=1000, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith(("aux1.", "AuxLogits.")) for k in reference)
    cache = offline_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference, cache / enum.url.rsplit("/", 1)[1])

    info = build_plugins(autoload=False).models().get(name)
    model = info.build(num_classes=3, pretrained=True)
    assert model.aux_logits is False and model.fc.out_features == 3
    assert not any(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in model.state_dict())
    first = next(k for k in reference if k.endswith("conv.weight"))
    assert torch.equal(model.state_dict()[first], reference[first])
    out = model.train()(torch.randn(2, 3, info.min_size, info.min_size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
