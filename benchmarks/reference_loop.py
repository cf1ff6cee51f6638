"""The official evaluation loop, as the baseline: what UniME's self_evaluate scripts compute per item.

Source: docs/method.md#pooling and docs/benchmarks.md#recall-at-k (deepglint/UniME self_evaluate/retrieval_self.py,
E5-V retrieval.py): one image per batch (texts 3 per batch), one data-loading worker, left padding, the full
causal-LM forward (LM head included) with `output_hidden_states=True`, then
`F.normalize(hidden_states[-1][:, -1])`. Written here from that description; no code is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.timing import RunResult, cpu_now, now
from uniretrieve.models.images import load_image
from uniretrieve.types import ImageLike


class ReferenceCollate:
    """(prompt, image or None) pairs → processor outputs, run in the data-loading worker as the official loop does."""

    def __init__(self, processor: Any, images_nested: bool) -> None:
        self.processor = processor
        self.images_nested = images_nested

    def __call__(self, rows: Sequence[tuple[str, ImageLike | None]]) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {"text": [p for p, _ in rows], "padding": True, "return_tensors": "pt"}
        if rows[0][1] is not None:
            images = [load_image(im) for _, im in rows]  # type: ignore[arg-type]
            kwargs["images"] = [[im] for im in images] if self.images_nested else images
        return dict(self.processor(**kwargs))


@torch.no_grad()
def reference_forward(
    model: Any, inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> Any:
    """Normalised `hidden_states[-1][:, -1]` of the full causal-LM forward (left padding makes -1 the last token)."""
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    out = model(**inputs, output_hidden_states=True)
    return F.normalize(out.hidden_states[-1][:, -1].float(), dim=-1).cpu()


def run_reference(
    model: Any,
    processor: Any,
    *,
    prompts: Sequence[str],
    images: Sequence[ImageLike] | None,
    modality: str,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    images_nested: bool = False,
    workers: int = 1,
) -> RunResult:
    """Time the reference loop over the items in input order. The processor must pad on the left."""
    if getattr(processor, "tokenizer", processor).padding_side != "left":
        raise ValueError("the reference loop reads position -1, which needs a left-padding tokenizer")
    rows = list(zip(prompts, images if images is not None else [None] * len(prompts), strict=True))
    loader = DataLoader(
        rows,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=ReferenceCollate(processor, images_nested),
    )
    out, tokens, padded = [], 0, 0
    start, cpu = now(device), cpu_now()
    for inputs in loader:
        mask = inputs["attention_mask"]
        tokens += int(mask.sum())
        padded += mask.numel()
        out.append(reference_forward(model, inputs, device, dtype))
    seconds = now(device) - start
    del loader  # joins the worker, so its CPU time is counted
    cpu = cpu_now() - cpu
    emb = torch.cat(out).numpy() if out else np.empty((0, 0), np.float32)
    return RunResult("reference", modality, len(rows), tokens, padded, seconds, emb, cpu_seconds=cpu)
