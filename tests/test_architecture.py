"""The import rules of docs/architecture.md, read from the source (ast), and the store's Protocols kept honest.

- No module uses another module's private names (``_name``): neither imported, nor reached as an attribute.
- ``zoo/web/`` never imports ``zoo/cli/``.
- The vocabulary (history keys, metric names and their ``test_`` keys, system tags) is spelled in zoo/vocab.py
  alone: no other module writes two or more of those keys in one tuple, list or set literal (an order or a key
  list), writes a system tag's text, or defines its own ``zoo.`` prefix constant.
- The store, the web app, the filters and the registry commands import no torch when imported (followed through
  every zoo module they import at module level).
- ``zoo.store.api``: ``Registry`` has every member of each Protocol with the same signature; each caller works
  through a registry narrowed to its Protocol; each member is used by some caller of that Protocol.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from zoo import vocab
from zoo.store import Registry, api

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"


# ----------------------------------------------------------------------------------------------- reading the source
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the zoo package: dotted name -> (file, parsed tree)."""
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in sorted(ZOO.rglob("*.py"))}


# Public names of other libraries that start with an underscore: SQLAlchemy's Row._mapping (documented API; bulk.py
# happens to have a function of that name too).
LIBRARY_PUBLIC = frozenset({"_mapping"})


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an ImportFrom reads from, relative imports resolved against ``module``'s package."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = modules()[module][0].name == "__init__.py"
    base = package if is_package else package[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines anywhere: functions, classes, assigned names and assigned attributes (self._x = ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def private_uses(trees: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    """Every place a module imports another zoo module's private name, or reaches one as an attribute
    (``other._commit(...)``) that it does not define itself but another zoo module does."""
    own = {name: defined_names(tree) for name, (_, tree) in trees.items()}
    anyone = {n for names in own.values() for n in names if private(n)}
    found = []
    for name, (path, tree) in trees.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = absolute(name, node)
                if source.split(".")[0] != "zoo" or source == name:
                    continue
                found += [f"{where}:{node.lineno} imports {a.name} from {source}" for a in node.names
                          if private(a.name)]
                if any(private(part) for part in source.split(".")):
                    found.append(f"{where}:{node.lineno} imports from the private module {source}")
            elif isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} imports the private module {a.name}" for a in node.names
                          if a.name.split(".")[0] == "zoo" and any(private(p) for p in a.name.split("."))]
            elif isinstance(node, ast.Attribute) and private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if node.attr in anyone and node.attr not in own[name] and node.attr not in LIBRARY_PUBLIC:
                    found.append(f"{where}:{node.lineno} uses {ast.unparse(node)}, private to another module")
    return found


def imports_of(name: str, tree: ast.Module, *, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, module) of each import; ``top_level_only``: those run when the module is imported (not inside a
    function, nor under ``if TYPE_CHECKING:``)."""
    found = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = absolute(name, node)
                found.append((node.lineno, source))
                found.extend((node.lineno, f"{source}.{a.name}") for a in node.names
                             if f"{source}.{a.name}" in modules())  # from zoo.store import queries
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
            elif not top_level_only:
                for child in ast.walk(node):
                    if isinstance(child, ast.Import):
                        found.extend((child.lineno, a.name) for a in child.names)
                    elif isinstance(child, ast.ImportFrom):
                        found.append((child.lineno, absolute(name, child)))

    visit(tree.body)
    return found


def torch_chain(start: str) -> list[str] | None:
    """The chain of module-level imports from ``start`` to torch (or torchvision), or None: importing a module
    also runs its packages' __init__ files, and each zoo module it imports at module level."""
    trees = modules()
    seen, todo = {start}, [[start]]
    while todo:
        chain = todo.pop()
        current = chain[-1]
        parts = current.split(".")
        following = [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages above it
        following += [m for _, m in imports_of(current, trees[current][1], top_level_only=True)]
        for target in following:
            if target.split(".")[0] in ("torch", "torchvision"):
                return chain + [target]
            while target and target not in trees:  # from zoo.x import name: the module zoo.x
                target = target.rpartition(".")[0]
            if target and target not in seen:
                seen.add(target)
                todo.append(chain + [target])
    return None


# ----------------------------------------------------------------------------------------------- the import rules
def test_no_module_uses_another_modules_private_names():
    assert private_uses(modules()) == []


def test_the_private_name_rule_fails_on_an_import_and_on_an_attribute():
    broken = dict(modules())
    for name, code in (("zoo.store.queue", "from zoo.store.registry import _schema\n"),
                       ("zoo.store.trash", "def f(reg):\n    return reg._touch(None, 1)\n"),
                       ("zoo.web.data", "from ..store.registry import _db_message\n")):
        broken[name] = (modules()[name][0], ast.parse(code))
    found = private_uses(broken)
    assert any("imports _schema from zoo.store.registry" in f for f in found)
    assert any("reg._touch" in f for f in found)
    assert any("imports _db_message from zoo.store.registry" in f for f in found)  # a relative import too


def web_imports_of_cli(trees: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    return [f"{name}:{line} imports {target}" for name, (_, tree) in trees.items() if name.startswith("zoo.web")
            for line, target in imports_of(name, tree, top_level_only=False)
            if target == "zoo.cli" or target.startswith("zoo.cli.")]


def test_web_never_imports_cli():
    assert web_imports_of_cli(modules()) == []
    broken = dict(modules())
    broken["zoo.web.data"] = (modules()["zoo.web.data"][0],
                              ast.parse("def run_filter():\n    from zoo.cli.runs import run_filter\n"))
    assert web_imports_of_cli(broken) == ["zoo.web.data:2 imports zoo.cli.runs"]


VOCAB_KEYS = frozenset(vocab.HISTORY_KEYS) | set(vocab.OVERALL) | set(vocab.PER_CLASS) | set(vocab.METRIC_ORDER)
SYSTEM_TAGS = frozenset(value for name, value in vars(vocab).items() if name.endswith("_TAG"))


def vocabulary_outside_vocab(trees: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    found = []
    for name, (path, tree) in trees.items():
        if name == "zoo.vocab":
            continue
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                keys = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in VOCAB_KEYS]
                if len(keys) >= 2:
                    found.append(f"{where}:{node.lineno} lists {', '.join(keys)} (use zoo.vocab's names)")
            elif isinstance(node, ast.Constant) and node.value in SYSTEM_TAGS:
                found.append(f"{where}:{node.lineno} spells the system tag {node.value!r} (use zoo.vocab's)")
        for node in tree.body:  # a prefix constant of its own: SYSTEM_PREFIX = "zoo."
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and node.value.value == vocab.SYSTEM_TAG_PREFIX:
                found.append(f"{where}:{node.lineno} defines its own {vocab.SYSTEM_TAG_PREFIX!r} prefix")
    return found


def test_metric_order_history_keys_and_system_tags_are_spelled_in_vocab_alone():
    assert {"zoo.note", "zoo.group", "zoo.from"} <= SYSTEM_TAGS and "test_accuracy" in VOCAB_KEYS
    assert vocabulary_outside_vocab(modules()) == []


@pytest.mark.parametrize("code, says", [
    ('ORDER = ("test_accuracy", "test_f1", "test_loss")\n', "lists test_accuracy, test_f1, test_loss"),
    ('KEYS = ["train_loss", "val_loss"]\n', "lists train_loss, val_loss"),
    ('NOTE_TAG = "zoo.note"\n', "spells the system tag 'zoo.note'"),
    ('SYSTEM_PREFIX = "zoo."\n', "defines its own 'zoo.' prefix"),
])
def test_the_vocabulary_rule_fails_on_a_key_list_or_a_tag_written_elsewhere(code, says):
    broken = dict(modules())
    broken["zoo.render"] = (modules()["zoo.render"][0], ast.parse(code))
    assert [f for f in vocabulary_outside_vocab(broken) if says in f]


NO_TORCH = ["zoo.filters", "zoo.vocab", "zoo.render", "zoo.report", "zoo.cli.runs", "zoo.cli.annotate",
            "zoo.cli.web", "zoo.cli.app"]


@pytest.mark.parametrize("module", sorted(
    [m for m in modules() if m.startswith(("zoo.store", "zoo.web"))] + NO_TORCH))
def test_store_web_and_registry_commands_import_no_torch(module):
    assert torch_chain(module) is None


def test_the_torch_rule_follows_imports_and_fails(monkeypatch):
    broken = dict(modules())
    broken["zoo.store.rows"] = (modules()["zoo.store.rows"][0], ast.parse("import torch.nn\n"))
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: broken)
    for start in ("zoo.store.queue", "zoo.web.app"):  # directly, or through zoo.store's __init__
        chain = torch_chain(start)
        assert chain[0] == start and chain[-2:] == ["zoo.store.rows", "torch.nn"], chain


# ----------------------------------------------------------------------------------------------- the store's Protocols
PROTOCOLS = {  # each Protocol -> the modules whose calls it describes
    api.RunStore: ["zoo.web.app", "zoo.web.api", "zoo.web.data", "zoo.cli.runs"],
    api.StudyStore: ["zoo.web.app", "zoo.tune"],
    api.RunRecorder: ["zoo.training.session", "zoo.training.plan", "zoo.training.resume"],
    api.RunQueue: ["zoo.training.queue"],
    api.Transactions: ["zoo.store.queue"],
}


def members(protocol: type) -> dict[str, object]:
    """A Protocol's own members (its bases' too): name -> the function, property, or None for a plain attribute."""
    found: dict[str, object] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or not getattr(cls, "_is_protocol", False) or cls.__module__ != api.__name__:
            continue
        found.update({name: None for name in getattr(cls, "__annotations__", {})})
        found.update({name: value for name, value in vars(cls).items()
                      if callable(value) and not name.startswith("_") or isinstance(value, property)})
    return found


def shape(function) -> list[tuple[str, object, bool]]:
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("protocol", list(PROTOCOLS), ids=lambda p: p.__name__)
def test_registry_has_every_protocol_member_with_the_same_signature(protocol, tmp_path):
    with Registry.open(tmp_path / "registry.db") as reg:
        for name, member in members(protocol).items():
            if member is None:
                assert hasattr(reg, name), name
            elif isinstance(member, property):
                assert isinstance(inspect.getattr_static(Registry, name), property), name
            else:
                assert shape(getattr(Registry, name)) == shape(member), name


@pytest.mark.parametrize("protocol", list(PROTOCOLS), ids=lambda p: p.__name__)
def test_every_protocol_member_is_used_by_its_callers(protocol):
    own = {name for name in members(protocol)} - set().union(
        *(members(base) for base in protocol.__mro__[1:] if base in PROTOCOLS))
    used = {node.attr for module in PROTOCOLS[protocol] for node in ast.walk(modules()[module][1])
            if isinstance(node, ast.Attribute)}
    used |= {node.value for module in PROTOCOLS[protocol] for node in ast.walk(modules()[module][1])
             if isinstance(node, ast.Constant) and isinstance(node.value, str)}  # getattr(registry, "pending_writes")
    assert own and own <= used, own - used


def protocol_accesses(tree: ast.Module, protocol: str) -> set[str]:
    """The attributes a module reads on values annotated with ``protocol``: on a parameter so annotated, inside its
    function (``getattr(registry, "name", ...)`` too), and on ``self.<field>`` across the class that stores it."""
    import re

    annotated = re.compile(rf"\b{protocol}\b")
    found: set[str] = set()

    def reads(scope: ast.AST, owner) -> None:  # owner(node) -> whether node is the annotated value
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute) and owner(node.value):
                found.add(node.attr)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and len(node.args) >= 2 and owner(node.args[0]) and isinstance(node.args[1], ast.Constant):
                found.add(node.args[1].value)

    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for arg in function.args.args + function.args.kwonlyargs:
            if arg.annotation is None or not annotated.search(ast.unparse(arg.annotation)):
                continue
            reads(function, lambda node, name=arg.arg: isinstance(node, ast.Name) and node.id == name)
            fields = set()
            for node in ast.walk(function):  # self.registry = registry, or self.plan, self.registry = plan, registry
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        pairs = zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple) and \
                            isinstance(node.value, ast.Tuple) else [(target, node.value)]
                        fields |= {t.attr for t, v in pairs if isinstance(t, ast.Attribute) and
                                   isinstance(t.value, ast.Name) and t.value.id == "self" and
                                   isinstance(v, ast.Name) and v.id == arg.arg}
            for cls in classes:
                if fields and function in cls.body:
                    reads(cls, lambda node: isinstance(node, ast.Attribute) and node.attr in fields
                          and isinstance(node.value, ast.Name) and node.value.id == "self")
    return found


@pytest.mark.parametrize("protocol", list(PROTOCOLS), ids=lambda p: p.__name__)
def test_callers_read_nothing_of_a_registry_beyond_its_protocol(protocol):
    read = {module: protocol_accesses(modules()[module][1], protocol.__name__) for module in PROTOCOLS[protocol]}
    assert any(read.values()), "no caller is annotated with it"
    assert {module: sorted(names - set(members(protocol))) for module, names in read.items()} == \
        {module: [] for module in read}


def test_the_protocol_reading_rule_sees_parameters_fields_and_getattr():
    tree = ast.parse(
        "class Recorder:\n"
        "    def __init__(self, registry: 'RunRecorder', run_id):\n"
        "        self.registry, self.run_id = registry, run_id\n"
        "    def on_epoch_end(self):\n"
        "        self.registry.log_epoch(self.run_id)\n"
        "        getattr(self.registry, 'pending_writes', 0)\n"
        "def check(registry: Optional['RunRecorder']):\n"
        "    return registry.engine.dialect.name\n")
    assert protocol_accesses(tree, "RunRecorder") == {"log_epoch", "pending_writes", "engine"}
    assert protocol_accesses(tree, "RunStore") == set()


class Only:
    """A registry narrowed to one Protocol: any other attribute is an AttributeError naming it."""

    def __init__(self, protocol: type, registry: Registry):
        self._allowed, self._registry, self._protocol = set(members(protocol)), registry, protocol.__name__

    def __getattr__(self, name: str):
        if name not in self._allowed:
            raise AttributeError(f"{name} is not part of {self._protocol}")
        return getattr(self._registry, name)


def test_a_narrowed_registry_refuses_what_its_protocol_lacks(tmp_path):
    with Registry.open(tmp_path / "registry.db") as reg:
        store = Only(api.RunStore, reg)
        assert store.host == reg.host
        with pytest.raises(AttributeError, match="start_run is not part of RunStore"):
            store.start_run


def test_the_web_app_works_through_study_store_alone(tmp_path):
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx (in the dev extra)")
    from starlette.testclient import TestClient

    from test_cli_runs import add_run
    from zoo.web.app import create_app

    path = tmp_path / "registry.db"
    with Registry.open(path) as reg:
        first = add_run(reg, "resnet18", params={"lr": 0.1}, acc=0.9, loss=0.3, name="first")
        second = add_run(reg, "alexnet", params={"lr": 0.01}, acc=0.7, loss=0.6)
    with Registry.open(path, readonly=True, create=False) as reg:
        client = TestClient(create_app(Only(api.StudyStore, reg)), base_url="http://127.0.0.1")
        for page in ("/", "/?status=completed&sort=-test_accuracy", f"/runs/{first}", "/runs/first", "/studies",
                     f"/compare?runs={first}&runs={second}", "/api/runs", f"/api/runs/{first}",
                     f"/api/compare?runs={first}&runs={second}"):
            response = client.get(page)
            assert response.status_code == 200, (page, response.text[:300])
        assert client.get("/runs/99").status_code == 404


def test_a_session_and_the_queue_work_through_their_protocols_alone(make_images, tmp_path):
    from zoo.engine import CallbackList, EpochStats, TrainResult
    from zoo.spec import RunSpec
    from zoo.store import queue as store_queue
    from zoo.training import Session, make_plan
    from zoo.training.queue import enqueue, work
    from zoo.vocab import Status, StopReason

    def train_fn(ctx):
        logs = EpochStats(1.0, 0.5, 1.0, 0.5, 0.1, 0.01, 100.0).as_row()
        CallbackList(ctx.callbacks).call("on_epoch_end", None, 1, {**logs, "improved": True})
        return TrainResult(Status.COMPLETED, StopReason.MAX_EPOCHS, 1, 1, None, metrics={"test_accuracy": 0.5})

    data = make_images({"cat": 6, "dog": 6}, size=16)
    spec = RunSpec("tinycnn", str(data), image_size=16, epochs=1)
    with Registry.open(os.environ["ZOO_REGISTRY"]) as reg:
        recorder = Only(api.RunRecorder, reg)
        result = Session(make_plan([spec], recorder), recorder, train_fn=train_fn).run()
        assert result.exit_code == 0
        run = reg.get_run(result.outcomes[0].run_id)
        assert (run.status, run.epochs_run, run.best_epoch) == ("completed", 1, 1)

        queued = enqueue([spec], Only(api.RunQueue, reg))
        data.rename(tmp_path / "moved")  # the worker cannot plan it: recorded failed, no training
        done = work(Only(api.RunQueue, reg), max_runs=1)
        assert [run_id for run_id, _ in done.failed_to_start] == queued.run_ids
        assert reg.get_run(queued.run_ids[0]).status == "failed"

        transactions = Only(api.Transactions, reg)
        store_queue.requeue_run(transactions, reg.get_run(queued.run_ids[0]))
        claimed = store_queue.claim_run(transactions)
        assert claimed is not None and claimed.id == queued.run_ids[0]
        store_queue.release_run(transactions, claimed.id)
        assert reg.get_run(claimed.id).status == "queued"
