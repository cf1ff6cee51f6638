"""LoRA on a frozen backbone: what `Encoder.build` adds to a loaded model for training.

What is trained ([P] §3.2, docs/method.md): only LoRA adapters. Their targets come from the backbone registry
(`BackboneSpec.lora_targets`, matched only under `language_model_path`), so the vision tower and projector, whose
attention projections share names like `q_proj` with the decoder's, never receive an adapter unless
`LoraConfig.vision` asks for one (stage 2). Every base weight is frozen (peft), which keeps them out of the optimizer.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from uniretrieve.models.backbones import BackboneSpec, spec_for_model_type
from uniretrieve.models.loading import read_model_type, resolve_source
from uniretrieve.train.config import LoraConfig


def lora_target_regex(prefixes: Sequence[str], suffixes: Sequence[str]) -> str:
    """A peft `target_modules` regex (peft full-matches module names) for modules named `<prefix>.….<suffix>`.

    Example: prefixes ("model.language_model",), suffixes ("q_proj",) matches "model.language_model.layers.0.
    self_attn.q_proj" but not "model.vision_tower.encoder.layers.0.self_attn.q_proj".
    """
    suffix = "|".join(re.escape(s) for s in suffixes)
    return "|".join(rf"{re.escape(p)}\.(?:.*\.)?(?:{suffix})" for p in prefixes)


def _peft_init(init: str) -> bool | str:
    # "random": A and B both random, so a fresh adapter is *not* the identity (peft's init_lora_weights=False);
    # tests use it to make merged-vs-unmerged comparisons meaningful.
    if init == "default":
        return True
    if init == "random":
        return False
    return init


def quantized_load_kwargs(model: str, device: torch.device) -> dict[str, Any] | None:
    """`load_backbone` model_kwargs for an NF4 + double-quantized base (E5-V's QLoRA setting), or None (with a
    warning) where bitsandbytes or CUDA is missing."""
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

    spec = spec_for_model_type(read_model_type(resolve_source(model)))
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # Keep the vision side and the head unquantized: they are frozen and restored as they are.
        llm_int8_skip_modules=[*spec.vision_module_paths, "lm_head"],
    )
    return {"quantization_config": quant, "device_map": {"": device.index or 0}}


def attach_lora(
    hf_model: Any,
    spec: BackboneSpec,
    lora: LoraConfig,
    *,
    gradient_checkpointing: bool = False,
    quantized: bool = False,
) -> Any:
    """Freeze `hf_model` and wrap it in a peft model with LoRA on the language model (and the vision side if
    `lora.vision`), in train mode."""
    import peft

    for p in hf_model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack needed).
        # transformers 5.x renamed gradient_checkpointing_enable (now a deprecated alias) to activation_…
        if hasattr(hf_model, "activation_checkpointing_enable"):
            hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if quantized:
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
    return peft_model


def check_frozen(encoder: Any, lora: LoraConfig) -> None:
    """Only LoRA parameters train; without `lora.vision` nothing under the vision paths does."""
    trainable = encoder.trainable_parameters()
    if not trainable:
        raise RuntimeError("LoRA produced no trainable parameters; check lora.targets")
    not_lora = [n for n, _ in trainable if "lora_" not in n]
    if not_lora:
        raise RuntimeError(f"non-LoRA parameters are trainable: {not_lora[:5]}")
    if not lora.vision:
        leaked = [n for n, p in encoder.vision_parameters() if p.requires_grad]
        if leaked:
            raise RuntimeError(f"vision parameters are trainable in a language-only run: {leaked[:5]}")
