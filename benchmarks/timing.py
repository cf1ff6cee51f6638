"""Wall-clock timing that waits for the accelerator, and the record one timed run produces."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read after it measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def cpu_now() -> float:
    """CPU seconds (user + system) of this process and its finished children (data-loading workers).

    On a shared machine wall time includes the time other jobs held the cores; CPU time mostly does not, so
    CPU-time ratios are the steadier comparison there. Meaningless for GPU work (the GPU's time is not in it).
    """
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class RunResult:
    """One timed pass of one code path over one modality's items."""

    path: str
    """"reference", "encoder" (in-process `Encoder.encode` loop) or "encoder+Nw" (N preprocessing workers)."""
    modality: str
    items: int
    tokens: int
    """Real (non-padding) tokens the forward passes consumed, image tokens included."""
    padded_tokens: int
    """Batch × sequence length summed over batches: what the forward actually computed."""
    seconds: float
    embeddings: np.ndarray = field(repr=False)
    prep_seconds: float | None = None
    """Time spent in the processor (prompt, tokenizer, image decode and transform); in-process runs only."""
    forward_seconds: float | None = None
    cpu_seconds: float | None = None
    """CPU time of the pass (see `cpu_now`), workers included once they have exited."""

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def matmul_rate(device: torch.device, dtype: torch.dtype, *, n: int | None = None, reps: int = 10) -> float:
    """Measured dense matmul throughput (FLOP/s) of an n×n×n product in `dtype`: the denominator of MFU.

    Measured rather than taken from a data sheet, so MFU is relative to what this machine actually delivers.
    """
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = now(device)
        a @ b
        best = min(best, now(device) - t0)
    return 2 * n**3 / best


def cpu_model() -> str:
    """The CPU's model name and whether it computes bfloat16 natively (AVX512-BF16 / AMX): session machines differ,
    and bfloat16 figures depend on it."""
    try:
        info = open("/proc/cpuinfo").read()  # noqa: SIM115
    except OSError:
        import platform

        return platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(native) if native else 'no native bfloat16'})"


def run_header(module: str) -> dict[str, str]:
    """Date, machine and the exact command of a benchmark run, for the head of its JSON report."""
    import datetime as dt
    import os
    import platform
    import sys

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 30
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {mem} GiB, {cpu_model()}",
        "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
    }
