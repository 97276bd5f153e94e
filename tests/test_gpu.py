"""The CUDA path: one short training per precision, channels_last, --compile, DDP with nccl on one process.

Marked ``gpu`` and skipped without a CUDA GPU; ``bench/gpu_check.sh`` runs them (``pytest -m gpu``) and then
``bench/gpu.py`` on a machine that has one.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")]

FAST = ("--epochs", "2", "--image-size", "32", "--batch-size", "16")


def only_run():
    """The one run the test recorded."""
    from sqlalchemy import text

    from zoo.store import Registry

    reg = Registry.open(os.environ["ZOO_REGISTRY"])
    with reg.connect() as conn:
        (run_id,) = [row[0] for row in conn.execute(text("SELECT id FROM runs"))]
    return reg.get_run(run_id)


def check_trained(run, precision: str) -> None:
    assert run.status == "completed", run.error
    assert run.device == "cuda:0" and run.params["resolved_device"] == "cuda:0"
    assert run.params["resolved_precision"] == precision
    assert math.isfinite(run.metrics["test_loss"]) and 0 <= run.metrics["test_accuracy"] <= 1
    assert sum(map(sum, run.confusion)) == run.test_size


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_short_training_per_precision(cli, make_images, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    data = make_images({"cat": 20, "dog": 20}, size=40)
    result = cli("train", "tinycnn", "--data", data, *FAST, "--device", "cuda", "--precision", precision)
    assert result.exit_code == 0, result.output
    check_trained(only_run(), precision)


def test_auto_picks_the_gpu_and_its_best_half_precision(cli, make_images):
    data = make_images({"cat": 20, "dog": 20}, size=40)
    result = cli("train", "tinycnn", "--data", data, *FAST)
    assert result.exit_code == 0, result.output
    check_trained(only_run(), "bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_models_and_batches_are_channels_last_on_the_gpu(make_images):
    from zoo.data import load_images, make_pipeline, split_samples
    from zoo.engine import build_model, train
    from zoo.plugins import build_plugins
    from zoo.spec import Resolved, RunSpec

    images = load_images(make_images({"cat": 20, "dog": 20}, size=40), image_sizes=[32])
    split = split_samples(images, (8, 1, 1), 42)
    pipe = make_pipeline(images, split, image_size=32, batch_size=16, device="cuda")
    x, y = next(iter(pipe.train_epoch(torch.Generator().manual_seed(0))))
    assert x.is_cuda and y.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    info = build_plugins(autoload=False).models().get("tinycnn")
    spec = RunSpec("tinycnn", "unused", epochs=1, batch_size=16, image_size=32)
    model = build_model(info, 2, spec)
    result = train(info, pipe, images.classes, spec, Resolved(str(pipe.device), "bf16" if
                   torch.cuda.is_bf16_supported() else "fp16", 32), model=model)
    assert result.status == "completed", result.error
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile(cli, make_images):
    data = make_images({"cat": 20, "dog": 20}, size=40)
    result = cli("train", "tinycnn", "--data", data, *FAST, "--device", "cuda", "--compile")
    assert result.exit_code == 0, result.output
    run = only_run()
    check_trained(run, run.params["resolved_precision"])
    assert run.params["compile"] is True


def test_ddp_with_nccl_on_one_process(make_images):
    """torchrun with one process: the process group (nccl for CUDA tensors), DDP and the sums over ranks."""
    data = make_images({"cat": 20, "dog": 20}, size=40)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    child = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                            "-m", "zoo", "train", "tinycnn", "--data", str(data), *FAST, "--device", "cuda"],
                           env=env, capture_output=True, text=True, timeout=240)
    assert child.returncode == 0, (child.stdout + child.stderr)[-3000:]
    run = only_run()
    check_trained(run, run.params["resolved_precision"])
    assert run.params["world_size"] == 1 and run.params["dist_backend"] == "nccl"
    assert run.params["global_batch_size"] == run.params["per_rank_batch_size"] == 16
