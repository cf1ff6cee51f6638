"""Items → model inputs: prompt rendering, text truncation, image loading and the processor call.

`InputBuilder` does only CPU work and holds no model, so it pickles into DataLoader workers and runs there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from uniretrieve.models.backbones import BackboneSpec, ChatWrapper
from uniretrieve.models.images import load_image
from uniretrieve.models.prompts import render
from uniretrieve.types import Item


@dataclass
class PreparedBatch:
    """Processor outputs for a batch of items that all have, or all lack, an image."""

    inputs: dict[str, torch.Tensor]
    size: int
    truncated: int = 0
    """How many texts of this batch were cut to the token limit."""

    def pin_memory(self) -> PreparedBatch:  # DataLoader(pin_memory=True) calls this on custom batch types
        self.inputs = {
            k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()
        }
        return self


class InputBuilder:
    """Callable turning a list of Items into a `PreparedBatch`."""

    def __init__(
        self,
        processor: Any,
        spec: BackboneSpec,
        wrapper: ChatWrapper,
        *,
        prompt_regime: str,
        max_text_tokens: int,
    ) -> None:
        self.processor = processor
        self.spec = spec
        self.wrapper = wrapper
        self.prompt_regime = prompt_regime
        self.max_text_tokens = max_text_tokens

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def truncate_text(self, text: str) -> tuple[str, bool]:
        """Cut a text to `max_text_tokens` tokens before it is wrapped, so the prompt's summary line survives.
        `max_text_tokens` 0: never cut (the text is used exactly as given)."""
        if self.max_text_tokens == 0:
            return text, False
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_text_tokens:
            return text, False
        return self.tokenizer.decode(ids[: self.max_text_tokens], skip_special_tokens=False), True

    def prompt(self, item: Item) -> tuple[str, bool]:
        """The prompt string of one item, and whether its text was truncated."""
        text, cut = (None, False) if item.text is None else self.truncate_text(item.text)
        p = render(
            self.spec,
            self.wrapper,
            self.prompt_regime,
            text=text,
            has_image=item.image is not None,
            instruction=item.instruction,
        )
        return p, cut

    def __call__(self, items: Sequence[Item]) -> PreparedBatch:
        if not items:
            raise ValueError("cannot build inputs for an empty batch")
        with_image = [it.image is not None for it in items]
        if any(with_image) and not all(with_image):
            raise ValueError("a batch must hold only items with an image or only items without one")
        prompts, cuts = zip(*(self.prompt(it) for it in items), strict=True)
        kwargs: dict[str, Any] = {"text": list(prompts), "padding": True, "return_tensors": "pt"}
        if with_image[0]:
            images = [load_image(it.image) for it in items]  # type: ignore[arg-type]
            kwargs["images"] = [[im] for im in images] if self.spec.images_nested else images
        enc = self.processor(**kwargs)
        return PreparedBatch(inputs=dict(enc), size=len(items), truncated=sum(cuts))
