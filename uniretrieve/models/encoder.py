"""`Encoder`: an MLLM turned into a UniME embedding model.

An item (text, image, or both, with an optional instruction) is wrapped in a prompt ending "Summary above … in one
word:"; the final hidden state of the last real token, L2-normalised, is its embedding. Only the base forward runs:
no LM head logits, no `output_hidden_states` (the official code keeps every layer's states to read the last one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from uniretrieve.models.backbones import BackboneSpec
from uniretrieve.models.inputs import InputBuilder, PreparedBatch
from uniretrieve.models.loading import (
    LoadedBackbone,
    default_device,
    default_dtype,
    load_backbone,
    weight_hash,
)
from uniretrieve.models.pooling import last_token_pool, normalize
from uniretrieve.models.prompts import PROMPT_REGIMES
from uniretrieve.types import ImageLike, Item


class Encoder:
    """Embeds texts, images and image+text items with a multimodal LLM.

    Build it with `Encoder.from_pretrained`. `encode*` return float32 numpy arrays `[N, D]` with unit rows, in
    input order.
    """

    def __init__(
        self,
        loaded: LoadedBackbone,
        *,
        device: torch.device,
        dtype: torch.dtype,
        prompt_regime: str = "e5v",
        max_text_tokens: int | None = None,
    ) -> None:
        if prompt_regime not in PROMPT_REGIMES:
            raise ValueError(
                f"unknown prompt regime {prompt_regime!r}; choose one of {', '.join(PROMPT_REGIMES)}"
            )
        self.model = loaded.model
        self.processor = loaded.processor
        self.spec: BackboneSpec = loaded.spec
        self.model_id = loaded.model_id
        self.source = loaded.source
        self.adapter = loaded.adapter
        self.processor_kwargs = loaded.processor_kwargs
        self.device = device
        self.dtype = dtype
        self.prompt_regime = prompt_regime
        self.input_builder = InputBuilder(
            loaded.processor,
            loaded.spec,
            loaded.wrapper,
            prompt_regime=prompt_regime,
            max_text_tokens=max_text_tokens or loaded.spec.max_text_tokens,
        )
        self._base = getattr(self.model, self.spec.base_attr)
        # Padded text tokens per batch (beyond batch_size): on a CPU the cost grows with padded tokens, so long and
        # short texts are kept apart (1.5x on texts, benchmarks/RESULTS.md); on a GPU batch_size alone decides.
        self.max_batch_tokens: int | None = 1024 if device.type == "cpu" else None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        adapter: str | None = None,
        prompt_regime: str = "e5v",
        max_text_tokens: int | None = None,
        attn_implementation: str | None = None,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> Encoder:
        """Load a full checkpoint (a directory, a hub id or a registered name), or a base plus a LoRA adapter.

        device: defaults to CUDA when present. dtype: bf16 on CUDA, float32 on CPU unless given.
        adapter: a peft LoRA directory, merged into the weights for inference.
        prompt_regime: "e5v" (Summary-above prompts) or "mmeb" (raw VLM2Vec instruction text).
        processor_kwargs: processor settings over the registry's (e.g. `{"size": {"longest_edge": 1024 * 1024, "shortest_edge": 3136}}` for Qwen2-VL).
        """
        dev = torch.device(device) if device is not None else default_device()
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        dt = dt or default_dtype(dev)
        loaded = load_backbone(
            name_or_path,
            device=dev,
            dtype=dt,
            adapter=adapter,
            attn_implementation=attn_implementation,
            processor_kwargs=processor_kwargs,
        )
        return cls(loaded, device=dev, dtype=dt, prompt_regime=prompt_regime, max_text_tokens=max_text_tokens)

    # --- facts ---------------------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "text_config", cfg).hidden_size)

    @property
    def max_text_tokens(self) -> int:
        return self.input_builder.max_text_tokens

    @cached_property
    def weight_hash(self) -> str:
        return weight_hash(self.source, self.adapter)

    def describe(self) -> dict[str, Any]:
        """What determines the embeddings, for manifests and caches (JSON-able)."""
        return {
            "model_id": self.model_id,
            "source": self.source,
            "adapter": self.adapter,
            "family": self.family,
            "weight_hash": self.weight_hash,
            "prompt_regime": self.prompt_regime,
            "chat_wrapper": self.input_builder.wrapper.name,
            "processor_kwargs": dict(sorted(self.processor_kwargs.items())),
            "dim": self.dim,
            "max_text_tokens": self.max_text_tokens,
            "normalized": True,
            "pooling": "last_token",
        }

    def truncate_text(self, text: str) -> tuple[str, bool]:
        return self.input_builder.truncate_text(text)

    # --- compute -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: PreparedBatch) -> torch.Tensor:
        """Embeddings `[B, D]` (float32, unit rows, on the CPU) of a prepared batch."""
        inputs = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.inputs.items()
        }
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        hidden = self._base(**inputs).last_hidden_state
        return normalize(last_token_pool(hidden, inputs["attention_mask"])).cpu()

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[list[int]]:
        """Index lists of batches: image and text-only items apart, texts sorted by token count (longest first)
        and a text batch closed once its padded size would pass `max_batch_tokens`, so little compute goes to
        padding; the caller restores the input order."""
        text_idx = [i for i, it in enumerate(items) if it.image is None]
        image_idx = [i for i, it in enumerate(items) if it.image is not None]
        image_idx.sort(key=lambda i: -len(items[i].text or ""))
        image_bs = min(batch_size, self.spec.max_image_batch or batch_size)
        for s in range(0, len(image_idx), image_bs):
            yield image_idx[s : s + image_bs]
        if not text_idx:
            return
        texts = [" ".join(x for x in (items[i].instruction, items[i].text) if x) for i in text_idx]
        counts = [
            len(ids) for ids in self.input_builder.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ]
        order = sorted(range(len(text_idx)), key=lambda j: -counts[j])
        budget = self.max_batch_tokens
        batch: list[int] = []
        longest = 0
        for j in order:
            longest = longest or counts[j] + 1
            if batch and (len(batch) >= batch_size or (budget and (len(batch) + 1) * longest > budget)):
                yield batch
                batch, longest = [], counts[j] + 1
            batch.append(text_idx[j])
        yield batch

    def encode(
        self, items: Sequence[Item], *, batch_size: int = 16, show_progress: bool = False
    ) -> np.ndarray:
        """Embed items (text, image or image+text, each with an optional instruction) → float32 `[N, D]`."""
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        progress = _progress() if show_progress else None
        with progress or contextlib.nullcontext():
            task = progress.add_task("encoding", total=len(items)) if progress else None
            for idx in self.batches(items, batch_size):
                out[idx] = self.forward(self.input_builder([items[i] for i in idx])).numpy()
                if progress is not None:
                    progress.advance(task, len(idx))
        return out

    def encode_texts(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        *,
        batch_size: int = 16,
        show_progress: bool = False,
    ) -> np.ndarray:
        items = [Item(text=t, instruction=instruction) for t in texts]
        return self.encode(items, batch_size=batch_size, show_progress=show_progress)

    def encode_images(
        self,
        images: Sequence[ImageLike],
        instruction: str | None = None,
        *,
        batch_size: int = 16,
        show_progress: bool = False,
    ) -> np.ndarray:
        items = [Item(image=im, instruction=instruction) for im in images]
        return self.encode(items, batch_size=batch_size, show_progress=show_progress)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    return Progress(
        "[bold]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
