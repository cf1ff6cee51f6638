"""`Encoder`: an MLLM turned into a UniME embedding model, for inference and for training alike.

An item (text, image, or both, with an optional instruction) is wrapped in a prompt ending "Summary above … in one
word:"; the final hidden state of the last real token, L2-normalised, is its embedding. Only the base forward runs:
no LM head logits, no `output_hidden_states` (the official code keeps every layer's states to read the last one).

Two entry points over one embedding function (`embed`): `Encoder.load` (alias `from_pretrained`) for inference,
an adapter merged into the weights and `forward` under `torch.inference_mode()`; `Encoder.build` for training,
LoRA on the frozen backbone and gradients on. A merged adapter therefore reproduces the trained embeddings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from uniretrieve.models.backbones import BackboneSpec
from uniretrieve.models.batching import encode_in_order, plan_batches, progress_bar
from uniretrieve.models.device import resolve_device, resolve_dtype, resolve_precision
from uniretrieve.models.inputs import InputBuilder, PreparedBatch
from uniretrieve.models.loading import LoadedBackbone, load_backbone, weight_hash
from uniretrieve.models.pooling import last_token_pool, normalize
from uniretrieve.models.prompts import PROMPT_REGIMES
from uniretrieve.types import ImageLike, Item

if TYPE_CHECKING:
    from uniretrieve.train.config import LoraConfig


class Encoder:
    """Embeds texts, images and image+text items with a multimodal LLM.

    Load it with `Encoder.from_pretrained` / `Encoder.load` (inference) or `Encoder.build` (training). `encode*`
    return float32 numpy arrays `[N, D]` with unit rows, in input order.
    """

    def __init__(
        self,
        loaded: LoadedBackbone,
        *,
        device: torch.device,
        dtype: torch.dtype,
        prompt_regime: str = "e5v",
        max_text_tokens: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if prompt_regime not in PROMPT_REGIMES:
            raise ValueError(
                f"unknown prompt regime {prompt_regime!r}; choose one of {', '.join(PROMPT_REGIMES)}"
            )
        if max_text_tokens is not None and max_text_tokens < 0:
            raise ValueError(f"max_text_tokens must be ≥ 0 (0: no limit), got {max_text_tokens}")
        self.model = loaded.model
        """The transformers model; after `build`, the peft `PeftModel` around it (vision weights present, frozen)."""
        self.processor = loaded.processor
        self.spec: BackboneSpec = loaded.spec
        self.model_id = loaded.model_id
        self.source = loaded.source
        self.adapter = loaded.adapter
        self.processor_kwargs = loaded.processor_kwargs
        self.device = device
        self.dtype = dtype
        self.autocast_dtype = autocast_dtype
        self.prompt_regime = prompt_regime
        self.input_builder = InputBuilder(
            loaded.processor,
            loaded.spec,
            loaded.wrapper,
            prompt_regime=prompt_regime,
            max_text_tokens=loaded.spec.max_text_tokens if max_text_tokens is None else max_text_tokens,
        )
        self._base = getattr(self.base_model, self.spec.base_attr)
        # Padded text tokens per batch (beyond batch_size): on a CPU the cost grows with padded tokens, so long and
        # short texts are kept apart (1.5x on texts, benchmarks/RESULTS.md); on a GPU batch_size alone decides.
        self.max_batch_tokens: int | None = 1024 if device.type == "cpu" else None

    @classmethod
    def load(
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
        trust_remote_code: bool = False,
    ) -> Encoder:
        """Load a full checkpoint (a directory, a hub id or a registered name), or a base plus a LoRA adapter.

        device: defaults to this process's GPU when CUDA is present (`resolve_device`). dtype: bf16 on CUDA, float32
        on CPU unless given.
        adapter: a peft LoRA directory, merged into the weights for inference.
        prompt_regime: "e5v" (Summary-above prompts) or "mmeb" (raw VLM2Vec instruction text).
        max_text_tokens: texts are cut to this many tokens; None: the family's default (512); 0: never cut.
        processor_kwargs: processor settings over the registry's (e.g. `{"size": {"longest_edge": 1024 * 1024, "shortest_edge": 3136}}` for Qwen2-VL).
        trust_remote_code: allow a family that runs the checkpoint's own Python code (phi3_v); refused otherwise.
        """
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        loaded = load_backbone(
            name_or_path,
            device=dev,
            dtype=dt,
            adapter=adapter,
            attn_implementation=attn_implementation,
            processor_kwargs=processor_kwargs,
            trust_remote_code=trust_remote_code,
        )
        return cls(loaded, device=dev, dtype=dt, prompt_regime=prompt_regime, max_text_tokens=max_text_tokens)

    from_pretrained = load
    """The Hugging Face-style name of `load`."""

    @classmethod
    def build(
        cls,
        model: str,
        lora: LoraConfig,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        gradient_checkpointing: bool = False,
        prompt_regime: str = "e5v",
        max_text_tokens: int | None = None,
        trust_remote_code: bool = False,
    ) -> Encoder:
        """The trainable encoder: the backbone frozen, LoRA on its language model (and the vision side if
        `lora.vision`), in train mode. `embed` is differentiable w.r.t. the LoRA weights.

        precision: "auto" | "bf16" | "fp32" (`resolve_precision`). `lora.quantize_4bit` loads the base in NF4 when
        bitsandbytes and CUDA are present (a warning and the full-precision base otherwise).
        """
        from uniretrieve.train import lora as lora_mod  # training-only: peft, bitsandbytes

        dev = resolve_device(device)
        dtype, autocast_dtype = resolve_precision(precision, dev)
        model_kwargs = lora_mod.quantized_load_kwargs(model, dev) if lora.quantize_4bit else None
        if model_kwargs:
            dtype = torch.bfloat16  # the 4-bit base computes in bf16
        loaded = load_backbone(
            model, device=dev, dtype=dtype, model_kwargs=model_kwargs, trust_remote_code=trust_remote_code
        )
        peft_model = lora_mod.attach_lora(
            loaded.model,
            loaded.spec,
            lora,
            gradient_checkpointing=gradient_checkpointing,
            quantized=bool(model_kwargs),
        )
        enc = cls(
            dataclasses.replace(loaded, model=peft_model),
            device=dev,
            dtype=dtype,
            prompt_regime=prompt_regime,
            max_text_tokens=max_text_tokens,
            autocast_dtype=autocast_dtype,
        )
        lora_mod.check_frozen(enc, lora)
        return enc

    # --- facts ---------------------------------------------------------------------------------------------------
    @property
    def base_model(self) -> Any:
        """The transformers model (inside peft after `build`, LoRA layers injected); module names as in the base
        checkpoint."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if get_base is not None else self.model

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
    def prepare(self, items: Sequence[Item]) -> PreparedBatch:
        """Prompts + processor for a batch of items (CPU work; `input_builder` does the same in DataLoader workers)."""
        return self.input_builder(items)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def embed(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """`PreparedBatch.inputs` → `[B, D]` float32 unit rows on `self.device`; differentiable (w.r.t. the LoRA
        after `build`). The one embedding function: `forward` and the training steps both call it."""
        moved = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()
        }
        if "pixel_values" in moved and moved["pixel_values"].is_floating_point():
            moved["pixel_values"] = moved["pixel_values"].to(self.dtype)
        with self._autocast():
            hidden = self._base(**moved, use_cache=False).last_hidden_state
        return normalize(last_token_pool(hidden, moved["attention_mask"]))

    def compile(self) -> None:
        """Compile the language model's forward in place with `torch.compile` (inductor, dynamic shapes), for a
        long-lived inference process such as `uniretrieve serve --compile`.

        The decoder is what a query costs (its linear layers and the elementwise work between them, which inductor
        fuses); the vision tower stays eager, and text and image queries share the one compiled graph, since the
        decoder always takes embeddings. Compiling happens on the first calls, tens of seconds each for a new kind
        of batch (one row; several rows): warm it up before serving. Embeddings agree with the eager
        ones to float rounding (tests/test_encoder_compile.py)."""
        self.base_model.get_submodule(self.spec.language_model_path).compile(dynamic=True)

    @property
    def compiled(self) -> bool:
        """Whether `compile` has been applied (read off the decoder module itself)."""
        lm = self.base_model.get_submodule(self.spec.language_model_path)
        return getattr(lm, "_compiled_call_impl", None) is not None

    @torch.inference_mode()
    def forward(self, batch: PreparedBatch) -> torch.Tensor:
        """Embeddings `[B, D]` (float32, unit rows, on the CPU) of a prepared batch."""
        return self.embed(batch.inputs).cpu()

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[list[int]]:
        """Index lists of batches (`plan_batches` with this model's tokenizer and limits)."""
        return plan_batches(
            items,
            batch_size,
            tokenizer=self.input_builder.tokenizer,
            max_image_batch=self.spec.max_image_batch,
            max_batch_tokens=self.max_batch_tokens,
        )

    def encode(
        self, items: Sequence[Item], *, batch_size: int = 16, show_progress: bool = False
    ) -> np.ndarray:
        """Embed items (text, image or image+text, each with an optional instruction) → float32 `[N, D]`."""
        if not items or not show_progress:
            return encode_in_order(self, items, self.batches(items, batch_size))
        with progress_bar() as progress:
            task = progress.add_task("encoding", total=len(items))
            return encode_in_order(
                self, items, self.batches(items, batch_size), on_batch=lambda n, _: progress.advance(task, n)
            )

    # --- training ------------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameters_under(self, paths: Sequence[str]) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Parameters of the base model whose names start with one of the dotted module `paths`."""
        prefixes = tuple(p + "." for p in paths)
        for name, p in self.base_model.named_parameters():
            if name.startswith(prefixes):
                yield name, p

    def vision_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The vision tower and projector (registry `vision_module_paths`), LoRA layers included if any."""
        return list(self.parameters_under(self.spec.vision_module_paths))

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
