"""Where a model runs and in which dtype: the one rule for inference, training and corpus encoding alike."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device | None = None, *, rank: int | None = None) -> torch.device:
    """The given device; by default this process's GPU when CUDA is present, else the CPU.

    "This process's GPU" is LOCAL_RANK's under torchrun, else `rank`'s (ranks started by hand), else GPU 0; taken
    modulo the visible GPUs so ranks beyond them share.
    """
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank or 0))
    return torch.device("cuda", local % torch.cuda.device_count())


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The given dtype (a `torch.dtype` or its name); by default bf16 on CUDA (as the paper trains) and float32 on
    the CPU, where bf16 matmuls are slow and less exact."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """Training precision "auto" | "bf16" | "bf16-autocast" | "fp32" → (weight dtype, autocast dtype).

    The paper trains in bf16 (stage 2) / fp16 (stage 1) on A100s; bf16 serves both here (fp16 needs loss scaling and
    gains nothing on A100/H100). "auto" is the inference default of `resolve_dtype`, with bf16 autocast on CUDA.
    "bf16-autocast": float32 weights (fp32 master weights for AdamW) with bf16 compute, for CPUs with AVX512-BF16
    (uniretrieve/tiny/cpu.py).
    """
    if precision == "bf16-autocast":
        return torch.float32, torch.bfloat16
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32, None
    if precision in ("auto", "bf16"):
        return torch.bfloat16, torch.bfloat16
    raise ValueError(f"precision must be auto, bf16, bf16-autocast or fp32; got {precision!r}")
