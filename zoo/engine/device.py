"""Device, precision and backend set-up: where a run computes and in which number format."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.spec import PRECISIONS

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto") -> "torch.device":
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device; an unavailable device is a ZooError."""
    import torch

    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ZooError(f"--device {spec}: no CUDA GPU is available to this torch ({torch.__version__}); "
                           f"use --device cpu or --device auto.")
        index = torch.cuda.current_device() if text == "cuda" else text.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ZooError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA device(s), "
                           f"numbered from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
        return torch.device("cuda", int(index))
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ZooError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto.")
        return torch.device("mps")
    raise ZooError(f"--device '{spec}' is not a device; use auto, cpu, cuda, cuda:N or mps.")


def resolve_precision(spec: str, device: "torch.device") -> str:
    """'auto' -> bf16 on GPUs that support it, fp16 (with a gradient scaler) on other GPUs, fp32 elsewhere."""
    import torch

    text = (spec or "auto").strip().lower()
    if text not in PRECISIONS:
        raise ZooError(f"--precision '{spec}' is not one of {', '.join(PRECISIONS)}.")
    if text == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if text == "fp16" and device.type != "cuda":
        raise ZooError(f"--precision fp16 needs a CUDA GPU (device here: {device}); use fp32 or bf16.")
    if text == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ZooError("--precision bf16: this GPU does not support bfloat16; use fp16 or auto.")
    return text


def autocast(device: "torch.device", precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_backend(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


__all__ = ["resolve_device", "resolve_precision", "autocast", "setup_backend", "seed_everything"]
