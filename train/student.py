"""The trainable student: the backbone MLLM with LoRA (peft) on its language model, and a differentiable `embed`.

The embedding is computed exactly as `uniretrieve.models.encoder.Encoder.forward` computes it (same prompts via the
same `InputBuilder`, base forward without the LM head, last-token pooling, L2 normalisation), but with gradients,
so a merged adapter reproduces the trained embeddings at inference.

What is trained (UniME paper §3.2, docs/method.md#stage-1): only LoRA adapters. Their targets come from the
backbone registry (`BackboneSpec.lora_targets`, matched only under `language_model_path`), so the vision tower and
projector, whose attention projections share names like `q_proj` with the decoder's, never receive an adapter
unless `LoraConfig.vision` asks for one (stage 2). Every base weight is frozen (peft), which keeps them out of the
optimizer.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from uniretrieve.models.backbones import BackboneSpec
from uniretrieve.models.inputs import InputBuilder, PreparedBatch
from uniretrieve.models.loading import load_backbone
from uniretrieve.models.pooling import last_token_pool, normalize
from uniretrieve.train.config import LoraConfig
from uniretrieve.types import Item


def lora_target_regex(prefixes: Sequence[str], suffixes: Sequence[str]) -> str:
    """A peft `target_modules` regex (peft full-matches module names) for modules named `<prefix>.….<suffix>`.

    Example: prefixes ("model.language_model",), suffixes ("q_proj",) matches "model.language_model.layers.0.
    self_attn.q_proj" but not "model.vision_tower.encoder.layers.0.self_attn.q_proj".
    """
    suffix = "|".join(re.escape(s) for s in suffixes)
    return "|".join(rf"{re.escape(p)}\.(?:.*\.)?(?:{suffix})" for p in prefixes)


def resolve_device(device: str | None) -> torch.device:
    """The configured device; by default CUDA (this rank's LOCAL_RANK GPU under torchrun) when present."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype). The paper trains in bf16 (stage 2) / fp16 (stage 1) on A100s; we use bf16
    on CUDA for both (fp16 needs loss scaling and gains nothing on A100/H100); float32 on CPU, where bf16 is slow."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32, None
    if precision in ("auto", "bf16"):
        return torch.bfloat16, torch.bfloat16
    raise ValueError(f"precision must be auto, bf16 or fp32; got {precision!r}")


@dataclass
class Student:
    """A peft-wrapped MLLM plus everything needed to turn items into differentiable embeddings."""

    model: Any
    """peft `PeftModel` around the full MLLM (vision weights present and frozen)."""
    processor: Any
    spec: BackboneSpec
    input_builder: InputBuilder
    device: torch.device
    dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    source: str
    """The base checkpoint actually loaded (a directory or hub id): `save_merged` reloads it."""

    @property
    def base_model(self) -> Any:
        """The transformers model inside peft (LoRA layers injected); module names as in the base checkpoint."""
        return self.model.get_base_model()

    def prepare(self, items: Sequence[Item]) -> PreparedBatch:
        """Prompts + processor for a batch of items (CPU work), exactly as `Encoder` does it."""
        return self.input_builder(items)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`PreparedBatch.inputs` → `[B, D]` float32 unit rows on `self.device`, differentiable w.r.t. the LoRA."""
        moved = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if "pixel_values" in moved and moved["pixel_values"].is_floating_point():
            moved["pixel_values"] = moved["pixel_values"].to(self.dtype)
        base = getattr(self.base_model, self.spec.base_attr)
        with self._autocast():
            hidden = base(**moved, use_cache=False).last_hidden_state
        return normalize(last_token_pool(hidden, moved["attention_mask"]))

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


def _peft_init(init: str) -> bool | str:
    # "random": A and B both random, so a fresh adapter is *not* the identity (peft's init_lora_weights=False);
    # tests use it to make merged-vs-unmerged comparisons meaningful
    # (docs/design-notes.md#lora-tests-with-a-non-identity-init).
    if init == "default":
        return True
    if init == "random":
        return False
    return init


def _quantization_config(spec: BackboneSpec, device: torch.device) -> Any | None:
    """NF4 + double quantization (E5-V's QLoRA setting, docs/method.md#stage-1-settings) when bitsandbytes and
    CUDA exist."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        bnb = False
    else:
        bnb = True
    if not (bnb and device.type == "cuda"):
        warnings.warn(
            "lora.quantize_4bit needs bitsandbytes and a CUDA device; training the LoRA on the full-precision base "
            "instead (same adapter, more memory)",
            stacklevel=3,
        )
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # Keep the vision side and the head unquantized: they are frozen and restored as they are.
        llm_int8_skip_modules=[*spec.vision_module_paths, "lm_head"],
    )


def build_student(
    model: str,
    lora: LoraConfig,
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
    prompt_regime: str = "e5v",
    max_text_tokens: int | None = None,
) -> Student:
    """Load the MLLM, freeze it, put LoRA on its language model (and the vision side if `lora.vision`)."""
    import peft

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype, autocast_dtype = resolve_precision(precision, dev)
    quant = None
    if lora.quantize_4bit:
        from uniretrieve.models.backbones import spec_for_model_type
        from uniretrieve.models.loading import read_model_type, resolve_source

        quant = _quantization_config(spec_for_model_type(read_model_type(resolve_source(model))), dev)
    if quant is not None:
        loaded = _load_quantized(model, dev, quant)
    else:
        loaded = load_backbone(model, device=dev, dtype=dtype)
    spec = loaded.spec
    hf_model = loaded.model
    for p in hf_model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack needed).
        # transformers 5.x renamed gradient_checkpointing_enable (now a deprecated alias) to activation_…
        if hasattr(hf_model, "activation_checkpointing_enable"):
            hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if quant is not None:
        hf_model = peft.prepare_model_for_kbit_training(
            hf_model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={
                "use_reentrant": False
            },  # peft's default would switch to reentrant
        )

    lm_targets = list(lora.targets or spec.lora_targets)
    pattern = lora_target_regex([spec.language_model_path], lm_targets)
    if lora.vision:
        vision_targets = list(lora.vision_targets or spec.vision_lora_targets)
        pattern += "|" + lora_target_regex(spec.vision_module_paths, vision_targets)
    names = [n for n, _ in hf_model.named_modules()]
    if not any(re.fullmatch(pattern, n) for n in names if n.startswith(spec.language_model_path + ".")):
        raise ValueError(
            f"no module of the language model ({spec.language_model_path}) matches the LoRA targets {lm_targets}; "
            f"set lora.targets to suffixes of its linear layers (family {spec.family})"
        )
    peft_cfg = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=pattern,
        init_lora_weights=_peft_init(lora.init),
        use_dora=lora.use_dora,
        bias="none",
    )
    with (
        warnings.catch_warnings()
    ):  # peft calls transformers' deprecated is_gradient_checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = peft.get_peft_model(hf_model, peft_cfg)
    peft_model.train()

    student = Student(
        model=peft_model,
        processor=loaded.processor,
        spec=spec,
        input_builder=InputBuilder(
            loaded.processor,
            spec,
            loaded.wrapper,
            prompt_regime=prompt_regime,
            max_text_tokens=max_text_tokens or spec.max_text_tokens,
        ),
        device=dev,
        dtype=dtype,
        autocast_dtype=autocast_dtype,
        source=loaded.source,
    )
    _check_frozen(student, lora)
    return student


def student_for(cfg: Any, device: torch.device) -> Student:
    """`build_student` from a stage config's shared fields (model, lora, precision, gradient_checkpointing,
    prompt_regime, max_text_tokens): stage 1 and stage 2 build their student the same way."""
    return build_student(
        cfg.model,
        cfg.lora,
        device=device,
        precision=cfg.precision,
        gradient_checkpointing=cfg.gradient_checkpointing,
        prompt_regime=cfg.prompt_regime,
        max_text_tokens=cfg.max_text_tokens,
    )


def _check_frozen(student: Student, lora: LoraConfig) -> None:
    """Only LoRA parameters train; without `lora.vision` nothing under the vision paths does."""
    trainable = student.trainable_parameters()
    if not trainable:
        raise RuntimeError("LoRA produced no trainable parameters; check lora.targets")
    not_lora = [n for n, _ in trainable if "lora_" not in n]
    if not_lora:
        raise RuntimeError(f"non-LoRA parameters are trainable: {not_lora[:5]}")
    if not lora.vision:
        leaked = [n for n, p in student.vision_parameters() if p.requires_grad]
        if leaked:
            raise RuntimeError(f"vision parameters are trainable in a language-only run: {leaked[:5]}")


def _load_quantized(model: str, device: torch.device, quant: Any) -> Any:
    """`load_backbone` for a 4-bit base: load_backbone takes no quantization_config, so this repeats its few steps
    (spec lookup, processor padding side and pad token, chat wrapper) with one. A `model_kwargs` passthrough in
    `load_backbone` would remove this function (asked of the lead)."""
    import transformers
    from transformers import AutoProcessor

    from uniretrieve.models.backbones import spec_for_model_type
    from uniretrieve.models.loading import LoadedBackbone, read_model_type, resolve_source, text_model_type

    source = resolve_source(model)
    spec = spec_for_model_type(read_model_type(source), source=source)
    hf = getattr(transformers, spec.model_class).from_pretrained(
        source,
        quantization_config=quant,
        dtype=torch.bfloat16,
        device_map={"": device.index or 0},
        trust_remote_code=spec.trust_remote_code,
    )
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = spec.padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    wrapper = spec.wrapper_for(text_model_type(hf.config), frozenset(tok.get_vocab()))
    return LoadedBackbone(hf, processor, spec, wrapper, model, source, None)
