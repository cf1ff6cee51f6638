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


def bottleneck_mask(
    attention_mask: torch.Tensor, prompt_lens: Sequence[int], rows: Sequence[bool]
) -> torch.Tensor:
    """`[B, 1, L, L]` boolean attention (True: may attend) for right-padded rows: causal over the real tokens, and in
    each row marked in `rows` its caption tokens see only the prompt's last token and the caption before them.

    That last token is where the embedding is read (the E5-V prompt's last token), so a caption generated through
    this mask must come from what that one position holds: the gist-token masking of Mu et al. (2023, "Learning to
    Compress Prompts with Gist Tokens"), used here to make the embedding position carry a whole description
    (docs/tiny-model.md)."""
    n = attention_mask.shape[1]
    real = attention_mask.bool()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    allowed = causal[None] & real[:, None, :] & real[:, :, None]
    pos = torch.arange(n)
    for i, (plen, on) in enumerate(zip(prompt_lens, rows, strict=True)):
        if on:
            caption_q = pos[:, None] >= plen
            allowed[i] &= ~caption_q | (pos[None, :] >= plen - 1)
    # a padding query attends to itself: no empty softmax row
    allowed |= torch.eye(n, dtype=torch.bool)[None]
    return allowed[:, None]


def caption_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Mean next-token cross-entropy over the caption tokens of the batch (transformers shifts the labels)."""
    return model(**batch).loss


class CaptionBatcher:
    """`caption_batch` without the processor on the training thread's hot path: the same tensors (input_ids,
    attention_mask, pixel_values, labels; tests/test_recipe_speed.py), from the tokenizer alone with the image token
    expanded as the processor expands it, images decoded and preprocessed once per run (PixelCache), each caption
    cut once, each prompt's length counted once. The processor was called twice per batch (full texts, then prompts
    alone for their lengths), each time decoding and resizing every image again."""

    def __init__(self, processor: Any, *, max_length: int) -> None:
        from PIL import Image

        from uniretrieve.tiny.pixels import PixelCache

        self.tok = processor.tokenizer
        self.max_length = max_length
        self.image_token = processor.image_token
        probe = processor(text=[self.image_token], images=[Image.new("RGB", (8, 8))], return_tensors="pt")
        self.image_tokens = int((probe["input_ids"] == processor.image_token_id).sum())
        self.pixels = PixelCache(processor.image_processor)
        self._cut: dict[str, str] = {}
        self._prompt_len: dict[str, int] = {}

    def _expand(self, text: str) -> str:
        return text.replace(self.image_token, self.image_token * self.image_tokens)

    def __call__(
        self,
        prompts: Sequence[str],
        images: Sequence[Any],
        captions: Sequence[str],
        bottleneck: Sequence[bool] | None = None,
    ) -> dict[str, Any]:
        """The batch; rows marked in `bottleneck` get `bottleneck_mask`'s 4-D attention (then `token_mask` holds
        the 2-D padding mask, for counting tokens)."""
        tok = self.tok
        for c in captions:
            if c not in self._cut:
                ids = tok(c.strip(), add_special_tokens=False)["input_ids"][: self.max_length]
                self._cut[c] = tok.decode(ids)
        for p in prompts:
            if p not in self._prompt_len:
                self._prompt_len[p] = len(tok(self._expand(p))["input_ids"])
        texts = [
            self._expand(f"{p} {self._cut[c]}{tok.eos_token}") for p, c in zip(prompts, captions, strict=True)
        ]
        side, tok.padding_side = tok.padding_side, "right"
        try:
            enc = dict(tok(texts, padding=True, return_tensors="pt"))
        finally:
            tok.padding_side = side
        pics = [im for im in images if im is not None]
        if pics:
            enc["pixel_values"] = self.pixels(pics)
        labels = enc["input_ids"].clone()
        for i, p in enumerate(prompts):
            labels[i, : self._prompt_len[p]] = -100
        labels[enc["attention_mask"] == 0] = -100
        enc["labels"] = labels
        if bottleneck is not None and any(bottleneck):
            enc["token_mask"] = enc["attention_mask"]
            lens = [self._prompt_len[p] for p in prompts]
            enc["attention_mask"] = bottleneck_mask(enc["attention_mask"], lens, bottleneck)
        return enc
