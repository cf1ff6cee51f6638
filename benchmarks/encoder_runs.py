"""Timed passes of uniretrieve's `Encoder`: in-process (the `encode` loop, with prep/forward split) and with
preprocessing in DataLoader workers (`input_builder` as the collate function, as the Encoder API provides for)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.timing import RunResult, cpu_now, now
from uniretrieve.models.encoder import Encoder
from uniretrieve.types import Item


def run_in_process(enc: Encoder, items: Sequence[Item], *, modality: str, batch_size: int) -> RunResult:
    """The same work as `enc.encode(items, batch_size=...)`, with the processor and forward timed apart."""
    out = np.empty((len(items), enc.dim), dtype=np.float32)
    prep = fwd = 0.0
    tokens = padded = 0
    start, cpu = now(enc.device), cpu_now()
    for idx in enc.batches(items, batch_size):
        t0 = now(enc.device)
        batch = enc.input_builder([items[i] for i in idx])
        t1 = now(enc.device)
        out[idx] = enc.forward(batch).numpy()
        t2 = now(enc.device)
        prep, fwd = prep + t1 - t0, fwd + t2 - t1
        mask = batch.inputs["attention_mask"]
        tokens, padded = tokens + int(mask.sum()), padded + mask.numel()
    seconds, cpu = now(enc.device) - start, cpu_now() - cpu
    return RunResult("encoder", modality, len(items), tokens, padded, seconds, out, prep, fwd, cpu)


def run_with_workers(
    enc: Encoder, items: Sequence[Item], *, modality: str, batch_size: int, workers: int
) -> RunResult:
    """Length-bucketed batches built by `workers` processes while the model runs; pinned memory on CUDA so the
    Encoder's non-blocking copies overlap. Worker start-up is inside the timed region, as in a real job."""
    batches = list(enc.batches(items, batch_size))
    loader = DataLoader(
        list(items),  # type: ignore[arg-type]
        batch_sampler=batches,
        collate_fn=enc.input_builder,
        num_workers=workers,
        pin_memory=enc.device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    out = np.empty((len(items), enc.dim), dtype=np.float32)
    tokens = padded = 0
    start, cpu = now(enc.device), cpu_now()
    for idx, batch in zip(batches, loader, strict=True):
        mask = batch.inputs["attention_mask"]
        tokens, padded = tokens + int(mask.sum()), padded + mask.numel()
        out[idx] = enc.forward(batch).numpy()
    seconds = now(enc.device) - start
    del loader  # joins the workers, so their CPU time is counted
    return RunResult(
        f"encoder+{workers}w", modality, len(items), tokens, padded, seconds, out, cpu_seconds=cpu_now() - cpu
    )


def encoder_flops(enc: Encoder, items: Sequence[Item], *, batch_size: int) -> int:
    """Model FLOPs (matmuls, convolutions, attention) of the Encoder's forward passes over `items`, counted by
    torch's FlopCounterMode in an untimed pass. These are the FLOPs an embedding needs: no LM head."""

    def passes() -> None:
        with torch.inference_mode():
            for idx in enc.batches(items, batch_size):
                enc.forward(enc.input_builder([items[i] for i in idx]))

    return count_flops(passes)


def count_flops(fn: Any) -> int:
    """FLOPs (matmuls, convolutions, attention) that `fn()` runs, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_shapes(
        q: Any, k: Any, v: Any, *args: Any, **kwargs: Any
    ) -> int:  # FlopCounterMode also passes out_shape=
        return sdpa_flop_count(q, k, v)

    # torch's table covers the CUDA attention kernels but not the CPU flash kernel SDPA picks on CPU.
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_shapes}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_sdpa)
    with counter:
        fn()
    return int(counter.get_total_flops())
