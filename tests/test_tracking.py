"""zoo.track (recording runs from your own code) and zoo import FILE.jsonl, through the real registry and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoo
from zoo.store import Registry

FAST = ("--epochs", "2", "--image-size", "16", "--batch-size", "8")


def registry_path() -> Path:
    return Path(os.environ["ZOO_REGISTRY"])


def test_a_hand_written_torch_loop_appears_in_compare_beside_zoo_train(cli, make_images):
    import torch

    data = make_images({"cat": 6, "dog": 6}, size=16)
    assert cli("train", "tinycnn", "--data", data, *FAST).exit_code == 0
    torch.manual_seed(0)
    x, y = torch.rand(16, 4), torch.randint(0, 2, (16,))
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with zoo.track(model="mynet", data=str(data), params={"lr": 0.1, "epochs": 3}, tags={"owner": "alice"}) as run:
        for epoch in range(1, 4):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_epoch(epoch, train_loss=loss.item(), val_loss=loss.item() + 0.1, train_acc=0.5, val_acc=0.5)
        accuracy = (net(x).argmax(1) == y).float().mean().item()
        run.log_metrics(test_accuracy=accuracy, test_loss=loss.item(), **{"test_f1/cat": 0.5})
    ranked = json.loads(cli("compare", "--format", "json").stdout)
    assert {r["model"] for r in ranked} == {"tinycnn", "mynet"}
    mine = next(r for r in ranked if r["model"] == "mynet")
    assert mine["id"] == run.id and mine["status"] == "completed" and mine["value"] == pytest.approx(accuracy)
    with Registry.open(registry_path(), readonly=True) as reg:
        view = reg.get_run(run.id)
        history = reg.history(run.id)
    assert view.epochs_run == 3 and view.best_epoch == 3 and view.tags == {"owner": "alice"}
    assert [e for e, _ in history["val_loss"]] == [1, 2, 3] and view.params["lr"] == 0.1
    assert view.dataset_path == str(Path(data).resolve())
    assert json.loads(cli("list-runs", "--data", str(data), "--format", "json").stdout)  # --data finds both
    assert [r["id"] for r in json.loads(cli("list-runs", "--where", "tag.owner = alice", "--format", "json").stdout)] \
        == [run.id]


def test_an_exception_fails_the_run_and_goes_on_ctrl_c_interrupts_it():
    with pytest.raises(ValueError):
        with zoo.track(model="mynet", params={"lr": 1}) as failed:
            failed.log_epoch(1, train_loss=1.0)
            raise ValueError("diverged")
    with pytest.raises(KeyboardInterrupt):
        with zoo.track(model="mynet") as stopped:
            stopped.log_epoch(1, train_loss=1.0)
            stopped.log_epoch(2, train_loss=0.5)
            raise KeyboardInterrupt
    with Registry.open(registry_path(), readonly=True) as reg:
        one, two = reg.get_run(failed.id), reg.get_run(stopped.id)
        assert one.status == "failed" and one.error == "ValueError: diverged" and one.epochs_run == 1
        assert two.status == "interrupted" and two.epochs_run == 2 and len(reg.history(two.id)["train_loss"]) == 2


def test_sigterm_is_recorded_as_interrupted(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, zoo
        with zoo.track(model="mynet", registry={str(registry_path())!r}) as run:
            run.log_epoch(1, train_loss=1.0)
            print(run.id, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Terminated" in done.stderr
    run_id = int(done.stdout.split()[0])
    with Registry.open(registry_path(), readonly=True) as reg:
        view = reg.get_run(run_id)
    assert view.status == "interrupted" and view.error == "SIGTERM" and view.epochs_run == 1


def test_epochs_are_written_in_batches(monkeypatch):
    from zoo import tracking

    writes = []
    original = Registry.log_epochs
    monkeypatch.setattr(Registry, "log_epochs", lambda self, run_id, epochs: (writes.append(len(epochs)),
                                                                                original(self, run_id, epochs)))
    with zoo.track(model="mynet") as run:
        for epoch in range(1, 51):
            run.log_epoch(epoch, train_loss=1 / epoch)
    assert sum(writes) == 50 and len(writes) <= 2  # written together (the loop takes well under FLUSH_S)
    assert tracking.FLUSH_S >= 1


def test_import_jsonl(cli, tmp_path):
    lines = [
        {"model": "mynet", "name": "a", "params": {"lr": 0.01}, "tags": {"owner": "bob"},
         "metrics": {"test_accuracy": 0.8}, "history": [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.7}],
         "uuid": "1" * 32, "started": "2026-05-01T12:00:00", "finished": "2026-05-01T12:10:00"},
        {"model": "other", "status": "failed", "error": "boom", "history": {"train_loss": [[1, 2.0]]}},
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = cli("import", str(path))
    assert result.exit_code == 0 and "Imported 2 runs" in result.stdout, result.output
    with Registry.open(registry_path(), readonly=True) as reg:
        a = reg.get_run("1" * 8)
        assert a.model == "mynet" and a.best_epoch == 2 and a.epochs_run == 2 and a.metrics["test_accuracy"] == 0.8
    again = cli("import", str(path))  # the same file again: the run with a uuid is skipped
    assert again.exit_code == 0 and "Imported 1 run" in again.stdout and "1 already in the registry" in again.stdout
    assert json.loads(cli("compare", "--format", "json").stdout)[0]["model"] == "mynet"


@pytest.mark.parametrize("line, says", [
    ("not json", "line 2: not valid JSON"),
    ('{"name": "x"}', 'line 2: "model" must be a non-empty string'),
    ('{"model": "m", "status": "running"}', '"status" must be one of'),
    ('{"model": "m", "metrics": {"test_accuracy": "high"}}', "metrics.test_accuracy must be a number"),
    ('{"model": "m", "colour": 1}', "unknown field colour"),
    ('{"model": "m", "history": [{"train_loss": 1}]}', 'history[0] must be an object with an "epoch"'),
])
def test_a_bad_line_imports_nothing(cli, tmp_path, line, says):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"model": "good"}\n' + line + "\n")
    result = cli("import", str(path))
    assert result.exit_code == 1 and says in result.output and "Nothing was imported" in result.output
    assert not registry_path().exists() or "good" not in cli("list-runs", "--format", "json").stdout
