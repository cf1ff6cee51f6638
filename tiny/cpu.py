"""CPU settings of the tiny-model recipe's training runs: OpenMP's wait policy and bf16 autocast.

Measured on the shared 2-core dev VM (benchmarks/RESULTS.md#recipe-step-throughput):
- OpenMP threads that spin while they wait (libgomp's default) lose their core whenever another process wants it,
  and every parallel region then waits for a descheduled thread: with 2 torch threads on a loaded machine a
  dual-encoder step ran 4× slower than with 1 thread. `OMP_WAIT_POLICY=PASSIVE` makes waiting threads sleep, and 2
  threads became faster than 1 again. libgomp reads the variable once, when torch loads it, so
  `passive_omp_wait()` must run before the first `import torch` of the process (the CLI commands call it first).
- A CPU with AVX512-BF16 runs bf16 matmuls 2.5–4× faster than fp32 at the recipe's shapes; `autocast()` computes
  the forward in bf16 while the weights, their gradients and AdamW's state stay fp32 (fp32 master weights).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any


def passive_omp_wait() -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` unless the user chose a policy; False when torch is already loaded (too late
    for this process)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def bf16_supported() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX), so autocast pays off."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the CPU when `enabled` and the CPU supports it, else nothing."""
    import torch

    if enabled and bf16_supported():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
