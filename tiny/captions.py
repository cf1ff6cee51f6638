"""Generative pretraining of the tiny base MLLM, LLaVA-style: image → caption, next-token loss on the caption only.

UniME starts from a pretrained MLLM (docs/method.md#stage-1); no pretrained MLLM can be downloaded here, so
`unime-tiny` gets its own pretraining on generated scenes first. The prompt is the backbone's chat wrapper around
`<image>\\n{request}`; the caption follows the wrapper and ends with `</s>`. Prompt, image and padding positions
are masked out of the loss (-100), as in LLaVA's pretraining data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def caption_prompt(wrapper_template: str, image_token: str | None, request: str) -> str:
    """The chat-wrapped human turn: `{image_token}\n{request}`, or the request alone for a text-only row."""
    return wrapper_template.replace("{body}", f"{image_token}\n{request}" if image_token else request)


def caption_batch(
    processor: Any, prompts: Sequence[str], images: Sequence[Any], captions: Sequence[str], *, max_length: int
) -> dict[str, Any]:
    """Processor inputs plus `labels` that score only the caption tokens and the closing `</s>`.

    Batches are right-padded so each prompt occupies the same leading positions in the prompt-only and the full
    sequence; captions longer than `max_length` tokens are cut (the prompt is never cut). `images[i]` is None for a
    text-only row (its prompt holds no image token).
    """
    pics = [im for im in images if im is not None]
    kw: dict[str, Any] = {"images": pics} if pics else {}
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "right"
    try:
        cut = [
            tok.decode(tok(c.strip(), add_special_tokens=False)["input_ids"][:max_length]) for c in captions
        ]
        texts = [f"{p} {c}{tok.eos_token}" for p, c in zip(prompts, cut, strict=True)]
        enc = processor(text=texts, padding=True, return_tensors="pt", **kw)
        prompt_lens = [
            int(m.sum())
            for m in processor(text=list(prompts), padding=True, return_tensors="pt", **kw)["attention_mask"]
        ]
    finally:
        tok.padding_side = side
    labels = enc["input_ids"].clone()
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return dict(enc)


def caption_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Mean next-token cross-entropy over the caption tokens of the batch (transformers shifts the labels)."""
    return model(**batch).loss
