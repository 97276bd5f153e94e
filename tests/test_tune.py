"""`zoo tune`: the search space from the command line, a study whose trials are ordinary runs (pruned ones
'pruned' with their history), its objective from the validation split only, `zoo tune show`, and several workers
on one study (SQLite and a real PostgreSQL server), a SIGKILLed worker's trial failed by heartbeat and retried."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from zoo.errors import ZooError  # noqa: E402
from zoo.store import Registry  # noqa: E402
from zoo.tune import Choice, Range, parse_space, train_command  # noqa: E402

TINY = ("--epochs", "3", "--image-size", "16", "--workers", "0")


def zoo_process(registry: str, *args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", ZOO_REGISTRY=registry)
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_for(check, what: str, limit: float = 300.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def study_trials(location: str, name: str) -> list:
    with Registry.open(location) as reg:
        from zoo.tune import open_storage

        return optuna.load_study(study_name=name, storage=open_storage(reg, create=False)).get_trials()


# ------------------------------------------------------------------------------------------- the space


def test_space_ranges_lists_and_fixed_values():
    space = parse_space({"lr": ["1e-4..1e-1"], "batch_size": ["16,32"], "weight_decay": ["1e-5..1e-3"],
                         "epochs": ["2..5"], "momentum": ["0.9"], "optimizer": ["sgd", "adamw"]})
    assert space.dims["lr"] == Range(1e-4, 1e-1, log=True, integer=False)  # log scale from the spec's metadata
    assert space.dims["weight_decay"].log and not space.dims["epochs"].log
    assert space.dims["epochs"] == Range(2, 5, log=False, integer=True)
    assert space.dims["batch_size"] == Choice((16, 32)) and space.dims["optimizer"] == Choice(("sgd", "adamw"))
    assert space.fixed == {"momentum": 0.9}
    assert train_command("tinycnn", {"data": "my data", "hflip": "false"}, {"lr": 0.01}) == \
        "zoo train tinycnn --data 'my data' --no-hflip --lr 0.01"


@pytest.mark.parametrize("option, text, fragment", [
    ("lr", "0.3..1e-3", "the low end must be below the high end"),
    ("lr", "0..0.1", "must be greater than 0"),
    ("weight_decay", "0..1e-3", "log scale, so the low end must be above 0"),
    ("optimizer", "sgd..adamw", "only numeric options take a range"),
    ("lr", "1e-3..", "needs both ends"),
    ("lr", "1e-3..0.1,0.5", "either one range"),
    ("batch_size", "16..x", "not a whole number"),
])
def test_bad_ranges_are_one_clear_error(option, text, fragment):
    with pytest.raises(ZooError, match=fragment):
        parse_space({option: [text]})


def test_bad_range_on_the_command_line_before_any_work(cli, make_images, tmp_path):
    data = make_images({"a": 4, "b": 4}, size=16)
    result = cli("tune", "tinycnn", "--data", data, "--lr", "0.3..1e-3", "--trials", "2")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--lr 0.3..1e-3: the low end must be below the high end" in lines[0], result.output
    assert not (tmp_path / "registry.db").exists()  # nothing opened, nothing recorded
    result = cli("tune", "tinycnn", "--data", data, "--image-size", "4,16", "--lr", "1e-3..0.1")
    assert result.exit_code == 1 and "minimum" in result.output and "Traceback" not in result.output
    with Registry.open(tmp_path / "registry.db") as reg, reg.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("select count(*) from runs")).scalar() == 0


# --------------------------------------------------------------------------------------------- a study


S1 = ("--lr", "1e-7..0.3", "--batch-size", "16,32", "--trials", "6", "--pruner", "median", "--sampler", "random")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, cache_dir):
    """One real study, trained once for the tests of this module that read it: `zoo tune` of tinycnn, 6 trials
    (lr from 1e-7, which learns nothing in 3 epochs, to 0.3: some trials are clearly bad, and get pruned), study
    's1' in its own registry. (registry path, data folder, the command's output)"""
    from conftest import write_images

    root = tmp_path_factory.mktemp("tuned")
    data = write_images(root / "images", {"a": 10, "b": 10, "c": 10}, size=16)
    env = dict(os.environ, COLUMNS="200", ZOO_REGISTRY=str(root / "registry.db"), ZOO_CACHE=str(cache_dir),
               ZOO_DISABLE_PLUGIN_AUTOLOAD="1", XDG_CONFIG_HOME=str(root / "xdg-config"))
    for var in ("ZOO_PLUGINS_DIR", "ZOO_BLOCK_PLUGINS", "ZOO_ARTIFACTS", "ZOO_DEBUG"):  # as conftest's _isolate
        env.pop(var, None)
    done = subprocess.run([sys.executable, "-m", "zoo", "tune", "tinycnn", "--data", str(data), *TINY, *S1,
                           "--sampler-seed", "3", "--study", "s1"], env=env, text=True, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "registry.db", data, done.stdout


@pytest.fixture
def s1(tuned, monkeypatch):
    """The registry of ``tuned`` as this test's registry."""
    monkeypatch.setenv("ZOO_REGISTRY", str(tuned[0]))
    return tuned


def test_tune_records_every_trial_as_a_run_prunes_and_never_reads_the_test_split(cli, s1, tmp_path):
    location, data, output = s1
    assert "Reproduce: zoo train tinycnn --data" in output
    assert output.count("trial ") >= 6 and "pruned" in output

    trials = study_trials(str(location), "s1")
    assert len(trials) == 6
    with Registry.open(location) as reg:
        runs = {t.number: reg.get_run(t.user_attrs["zoo.run"]) for t in trials}
        assert len({r.id for r in runs.values()}) == 6
        for t in trials:
            run = runs[t.number]
            assert run.system_tags["zoo.study"] == "s1" and run.system_tags["zoo.group"] == "s1"
            assert run.system_tags["zoo.trial"] == str(t.number)
            assert run.params["lr"] == t.params["lr"] and run.params["batch_size"] == t.params["batch_size"]
            val = dict(reg.history(run.id, ["val_loss"])["val_loss"])
            # every value the trial was told is the recorded validation loss of that epoch...
            assert t.intermediate_values == pytest.approx(val, rel=1e-12)
            if t.state.name == "COMPLETE":
                assert run.status == "completed"
                # ...and the objective is the validation loss at the run's best epoch, never a test value
                assert t.value == pytest.approx(val[run.best_epoch], rel=1e-12)
                assert t.value != pytest.approx(run.metrics["test_loss"], rel=1e-9)
            else:
                assert t.state.name == "PRUNED"
                assert run.status == "pruned" and run.stop_reason == "pruned"
                assert 1 <= len(val) < 3 and run.epochs_run == len(val)  # history kept, stopped early
                assert not run.metrics  # a pruned run is never tested
        assert any(r.status == "pruned" for r in runs.values())

    listed = json.loads(cli("list-runs", "--status", "pruned", "--format", "json").stdout)
    assert {r["id"] for r in listed} == {r.id for r in runs.values() if r.status == "pruned"}

    shown = json.loads(cli("tune", "show", "s1", "--format", "json").stdout)
    assert [t["trial"] for t in shown["trials"]] == list(range(6))
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert shown["best"]["trial"] == best.number and shown["best"]["run"] == best.user_attrs["zoo.run"]
    assert shown["best"]["command"].startswith("zoo train tinycnn --data ")
    assert f"--lr {best.params['lr']!r}" in shown["best"]["command"]
    assert set(shown["importances"]) <= {"lr", "batch_size"}
    table = cli("tune", "show", "s1", "--plots", tmp_path / "plots")
    assert table.exit_code == 0, table.output
    assert "pruned" in table.output and "Reproduce: zoo train tinycnn" in table.output
    assert (tmp_path / "plots" / "s1-history.png").stat().st_size > 0
    assert (tmp_path / "plots" / "s1-parallel.png").stat().st_size > 0
    csv_lines = cli("tune", "show", "s1", "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("trial,state,value,run,run_status") and len(csv_lines) == 7

    # the same command again: the study already has its 6 finished trials
    again = cli("tune", "tinycnn", "--data", data, *TINY, *S1, "--study", "s1")
    assert again.exit_code == 0 and "already has 6 finished trial(s)" in again.output
    assert len(study_trials(str(location), "s1")) == 6
    other = cli("tune", "tinycnn", "--data", data, *TINY, "--lr", "1e-3..0.1", "--study", "s1")
    assert other.exit_code == 1 and "another space" in other.output
    from conftest import TORCH_PROBE

    probe = subprocess.run([sys.executable, "-c", TORCH_PROBE, "tune", "show", "s1"], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0 and probe.stderr.strip().endswith("NO-TORCH"), probe.stderr  # a read command
    missing = cli("tune", "show", "nope")
    assert missing.exit_code == 1 and "No study 'nope'" in missing.output and "s1" in missing.output


def registry_files(location) -> dict[str, str]:
    """The registry file's digest, and every file beside it (a -wal or -shm left behind would show here), once
    the connections of earlier in-process commands are collected (a writer's open connection keeps its -wal)."""
    import gc
    import hashlib

    gc.collect()
    folder = location.parent
    return {"digest": hashlib.sha256(location.read_bytes()).hexdigest(),
            "beside": " ".join(sorted(p.name for p in folder.iterdir() if p.name.startswith(location.name)))}


def test_report_study_shows_what_tune_show_shows_and_writes_nothing(cli, s1, tmp_path):
    import html

    location = s1[0]
    before = registry_files(location)
    shown = json.loads(cli("tune", "show", "s1", "--format", "json").stdout)
    best, n = shown["best"], len(shown["trials"])
    assert n == 6 and best["run"] is not None and set(shown["importances"]) == {"lr", "batch_size"}

    out = tmp_path / "study.html"
    result = cli("report", "--study", "s1", "-o", out)
    assert result.exit_code == 0 and result.output == f"Wrote {out}.\n", result.output
    page = out.read_text()
    assert "<title>Report on study s1</title>" in page
    trials = re.search(r'<table class="grid" id="trials">.*?</table>', page, re.S).group(0)
    assert trials.count("<tr data-trial=") == n and "pruned" in trials
    assert f'<tr data-trial="{best["trial"]}" class="best">' in trials and f"#{best['run']}" in trials
    assert f'id="trial-count">{n} ({n} finished)' in page
    assert f"Trial {best['trial']}, run #{best['run']}, val_loss" in page
    assert f'<pre class="command" id="reproduce">{html.escape(best["command"])}</pre>' in page
    for name in shown["importances"]:
        assert f"<tr><th>{name}</th><td class=\"num\">{shown['importances'][name]:.2f}</td></tr>" in page
    assert not re.search(r"(src|href)=", page) and "<script" not in page  # self-contained, as run reports

    again = tmp_path / "again.html"
    cli("report", "--study", "s1", "-o", again)
    assert again.read_bytes() == out.read_bytes()  # same study, same bytes: importances are deterministic

    md = tmp_path / "study.md"
    assert cli("report", "--study", "s1", "-o", md).exit_code == 0
    text = md.read_text()
    assert text.startswith("# Report on study s1\n") and f"| trials | {n} ({n} finished) |" in text
    assert f"Trial {best['trial']}, run #{best['run']}, val_loss " in text and f"\n{best['command']}\n" in text
    assert len([line for line in text.splitlines() if re.match(r"\| \d+ \| (complete|pruned) ", line)]) == n
    assert registry_files(location)["digest"] == before["digest"]  # read-only: not a byte written

    # In a process of its own, on a copy of the registry in WAL mode (as writers leave it, alone in its folder):
    # no byte written, nothing left beside the file, no torch imported.
    import sqlite3

    from conftest import TORCH_PROBE

    copy = tmp_path / "copy" / "registry.db"
    copy.parent.mkdir()
    source, target = sqlite3.connect(location), sqlite3.connect(copy)
    source.backup(target)
    source.close(), target.close()
    alone = registry_files(copy)
    assert alone["beside"] == "registry.db" and copy.read_bytes()[18:20] == b"\x02\x02"  # WAL
    probe = subprocess.run([sys.executable, "-c", TORCH_PROBE, "report", "--study", "s1", "-o", tmp_path / "p.md"],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, ZOO_REGISTRY=str(copy)))
    assert probe.returncode == 0 and probe.stderr.strip().endswith("NO-TORCH"), probe.stderr  # a read command
    assert (tmp_path / "p.md").read_text() == text and registry_files(copy) == alone


@pytest.mark.parametrize("args, fragment", [
    (["--study", "nope"], "No study 'nope' in registry"),
    (["--study", "s1", "3"], "--study reports on a study alone"),
    (["--study", "s1", "-o", "study.txt"], "end the name with .html or .md"),
])
def test_report_study_errors_are_one_line(cli, s1, tmp_path, args, fragment):
    result = cli("report", *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and fragment in lines[0], result.output
    if "nope" in args:
        assert lines[0].endswith("there are: s1.")  # the known studies
    assert not (tmp_path / "study.txt").exists()


def test_report_study_on_a_registry_without_studies(cli, tmp_path):
    with Registry.open(tmp_path / "registry.db"):
        pass
    result = cli("report", "--study", "s1", "-o", tmp_path / "r.html")
    assert result.exit_code == 1 and "holds no study" in result.output and len(result.output.splitlines()) == 1


def told_study(location: str, name: str, trials: int):
    """A study of ``trials`` trials told by hand, each with a run recorded through the lifecycle API (no training:
    for the tests that only read a study); returns its best trial."""
    import warnings

    from zoo.tune import Settings, open_study
    from zoo.vocab import STUDY_TAG, TRIAL_TAG

    space = parse_space({"lr": ["1e-3..1e-1"], "batch_size": ["8,16"]})
    space.fixed["data"] = "demo"
    with Registry.open(location) as reg, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna: a heartbeat is meant for optimize(), ask/tell here
        study = open_study(reg, Settings("tinycnn", name, space, sampler_seed=0, pruner="none"), 2)
        for _ in range(trials):
            trial = study.ask()
            params = space.suggest(trial)
            run = reg.start_run(model="tinycnn", plugin="builtin", params=params,
                                tags={STUDY_TAG: name, TRIAL_TAG: str(trial.number)})
            trial.set_user_attr("zoo.run", run)
            reg.finish_run(run, "completed", epochs_run=1, best_epoch=1)
            study.tell(trial, params["lr"] + params["batch_size"] / 100)
        return study.best_trial


def test_reading_a_study_writes_nothing_on_sqlite_and_postgresql(cli, registry_location, monkeypatch):
    """read_study/list_studies on a read-only registry: Optuna's storage cannot write (a write through it is
    refused by the database), and two reads give the same report. The study's trials are told by hand here (each
    with a run recorded through the lifecycle API): no training needed to read them."""
    from zoo.tune import list_studies, open_storage, read_study

    monkeypatch.setenv("ZOO_REGISTRY", registry_location)
    best = told_study(registry_location, "quick", 4)
    with Registry.open(registry_location, readonly=True, create=False) as reg:
        first = read_study(reg, "quick")
        assert read_study(reg, "quick") == first and set(first.importances) == {"lr", "batch_size"}
        assert first.best["trial"] == best.number and first.best["run"] == best.user_attrs["zoo.run"]
        assert [t["run_status"] for t in first.trials] == ["completed"] * 4
        [summary] = list_studies(reg)
        assert (summary.name, summary.trials, summary.best_run) == ("quick", 4, best.user_attrs["zoo.run"])
        storage = open_storage(reg, create=False)
        study_id = storage.get_study_id_from_name("quick")
        with pytest.raises(optuna.exceptions.StorageInternalError):
            storage.set_study_user_attr(study_id, "written", True)
        assert "written" not in storage.get_study_user_attrs(study_id)
    shown = json.loads(cli("tune", "show", "quick", "--format", "json").stdout)
    assert shown["best"] == first.best and shown["importances"] == first.importances


def test_ui_study_pages_with_links_from_and_to_the_runs(cli, s1):
    pytest.importorskip("uvicorn")
    import html

    from test_web import LiveServer

    location = s1[0]
    before = registry_files(location)
    trials = study_trials(str(location), "s1")
    runs = {t.number: t.user_attrs["zoo.run"] for t in trials}
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    server = LiveServer(location)
    try:
        status, page, _ = server.get("/studies")
        assert status == 200 and '<a href="/studies">Studies</a>' in page
        row = re.search(r'<tr data-study="s1">.*?</tr>', page).group(0)
        assert '<a href="/studies/s1">s1</a>' in row and '<td class="num">6</td>' in row
        assert f'<a href="/runs/{runs[best.number]}">{runs[best.number]}</a>' in row

        status, page, _ = server.get("/studies/s1")
        assert status == 200 and 'id="study-title">Study <span class="name">s1</span> · tinycnn' in page
        table = re.search(r'<table class="grid" id="trials">.*?</table>', page, re.S).group(0)
        for number, run in runs.items():  # every trial, linked to its run
            assert re.search(rf'<tr data-trial="{number}"[^>]*>.*?<a href="/runs/{run}">{run}</a>', table)
        assert f'<tr data-trial="{best.number}" class="best">' in table
        assert f'<p id="best">Trial {best.number}, run <a href="/runs/{runs[best.number]}">' in page
        shown = json.loads(cli("tune", "show", "s1", "--format", "json").stdout)
        assert f'id="reproduce">{html.escape(shown["best"]["command"])}</pre>' in page
        assert all(f"<tr><th>{k}</th>" in page for k in shown["importances"])
        assert '<a href="/?group=s1">its runs</a>' in page

        status, page, _ = server.get(f"/runs/{runs[0]}")
        assert status == 200 and '<a href="/studies/s1" id="study-link">s1</a>, trial 0' in page
        status, page, _ = server.get("/")
        assert page.count('<a class="tag study" href="/studies/s1"') == 6

        status, page, _ = server.get("/studies/nope")
        assert status == 404 and "No study &#39;nope&#39; in registry" in page and "there are: s1." in page
    finally:
        server.stop()
    after = registry_files(location)  # not a byte written, nothing new left beside the file
    assert after["digest"] == before["digest"] and set(after["beside"].split()) <= set(before["beside"].split())


def test_a_study_name_is_text_everywhere(cli, tmp_path):
    pytest.importorskip("uvicorn")
    from urllib.parse import quote

    from test_web import EVIL, LiveServer

    location = tmp_path / "registry.db"
    told_study(str(location), EVIL, 2)
    assert cli("report", "--study", EVIL, "-o", tmp_path / "r.html").exit_code == 0
    assert cli("report", "--study", EVIL, "-o", tmp_path / "r.md").exit_code == 0
    pages = [(tmp_path / "r.html").read_text()]
    server = LiveServer(location)
    try:
        for path in ("/studies", "/studies/" + quote(EVIL, safe=""), "/runs/1"):
            status, page, _ = server.get(path)
            assert status == 200, path
            pages.append(page)
    finally:
        server.stop()
    for page in pages:
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    link = f'href="/studies/{quote(EVIL, safe="/")}"'
    assert link in pages[1] and link in pages[3]  # the list's link and the run page's link to its study
    assert "<script>" not in (tmp_path / "r.md").read_text()


def test_a_pruning_stop_outranks_early_stopping_in_the_same_epoch():
    from zoo.engine import CallbackList, StopTraining
    from zoo.vocab import Status

    def raising(stop):
        class Raise:
            def on_epoch_end(self, *args):
                raise stop
        return Raise()

    early = StopTraining()  # early stopping: completed
    pruned = StopTraining("pruned", status=Status.PRUNED, error="lags")
    nan = StopTraining("nan_loss", status=Status.FAILED, error="NaN")
    for order, wins in (([early, pruned], pruned), ([pruned, early], pruned), ([early, pruned, nan], nan),
                        ([nan, pruned], nan)):
        with pytest.raises(StopTraining) as raised:
            CallbackList([raising(stop) for stop in order]).call("on_epoch_end", None, 1, {})
        assert raised.value is wins


# ------------------------------------------------------------------------------------ several workers


@pytest.mark.slow
def test_two_workers_share_one_study(make_images, registry_location):
    data = make_images({"a": 10, "b": 10}, size=16)
    args = ("tune", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "16", "--workers", "0",
            "--lr", "1e-3..0.1", "--batch-size", "8,16", "--trials", "3", "--pruner", "none", "--study", "shared")
    workers = [zoo_process(registry_location, *args, "--sampler-seed", str(seed)) for seed in (1, 2)]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, out + err
    trials = study_trials(registry_location, "shared")
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["zoo.run"] for t in trials}) == 6
    with Registry.open(registry_location) as reg:
        assert {reg.get_run(t.user_attrs["zoo.run"]).system_tags["zoo.trial"] for t in trials} == \
            {str(t.number) for t in trials}


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(make_images, tmp_path):
    from zoo.tune import open_storage, own_share

    location = str(tmp_path / "registry.db")
    data = make_images({"a": 40, "b": 40}, size=16)
    args = ("tune", "tinycnn", "--data", data, *TINY, "--lr", "1e-3..0.1", "--pruner", "none", "--study", "k",
            "--heartbeat", "1", "--trials", "1")
    doomed = zoo_process(location, *args)

    def training():
        if not os.path.exists(location):
            return None
        try:
            trials = study_trials(location, "k")
        except Exception:  # the study is not there yet
            return None
        running = [t for t in trials if "zoo.run" in t.user_attrs]
        return running[0] if running else None

    victim = wait_for(training, "the first worker's trial to start its run")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=60)
    assert study_trials(location, "k")[victim.number].state.name == "RUNNING", "killed after its trial ended"
    with Registry.open(location) as reg:
        assert reg.get_run(victim.user_attrs["zoo.run"]).display_status == "stale"

        # what each worker does as it starts: a trial silent for longer than the grace period is failed and retried
        study = optuna.load_study(study_name="k", storage=open_storage(reg, heartbeat=1))
        wait_for(lambda: own_share(study, 1) is not None and
                 study.get_trials()[victim.number].state.name == "FAIL", "the heartbeat to fail the trial", 120)
    retry = [t for t in study_trials(location, "k") if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state.name == "WAITING" and retry[0].params == victim.params

    done = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], text=True, capture_output=True,
                          timeout=600, env=dict(os.environ, ZOO_REGISTRY=location))
    assert done.returncode == 0, done.stdout + done.stderr
    trials = study_trials(location, "k")
    assert len(trials) == 2 and trials[victim.number].state.name == "FAIL"
    redo = trials[retry[0].number]
    assert redo.state.name == "COMPLETE" and redo.params == victim.params
    with Registry.open(location) as reg:
        assert reg.get_run(redo.user_attrs["zoo.run"]).status == "completed"
        assert redo.user_attrs["zoo.run"] != victim.user_attrs["zoo.run"]
        assert reg.get_run(victim.user_attrs["zoo.run"]).display_status == "stale"


def test_a_diverging_trial_is_a_failed_run_and_the_search_goes_on(cli, make_images, tmp_path):
    import torch

    from zoo.plugins import get_plugins

    data = make_images({"a": 6, "b": 6}, size=16)
    model = get_plugins().models().get("tinycnn").build(2)
    nan = tmp_path / "nan.pt"  # weights that make every loss NaN: each trial's run fails (nan_loss)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, nan)
    result = cli("tune", "tinycnn", "--data", data, "--epochs", "1", "--image-size", "16", "--workers", "0",
                 "--weights", nan, "--lr", "0.01,0.1", "--sampler", "grid", "--trials", "2", "--study", "g")
    assert result.exit_code == 1 and "Every trial of this worker failed" in result.output, result.output
    assert result.output.count("failed (The ") == 2  # the search went on after the first failed trial
    trials = study_trials(str(tmp_path / "registry.db"), "g")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    with Registry.open(tmp_path / "registry.db") as reg:
        for t in trials:
            run = reg.get_run(t.user_attrs["zoo.run"])
            assert run.status == "failed" and run.stop_reason == "nan_loss"
    ranges = cli("tune", "tinycnn", "--data", data, "--lr", "1e-3..0.1", "--sampler", "grid")
    assert ranges.exit_code == 1 and "--sampler grid tries lists of values, not ranges" in ranges.output
