"""The trainable student is an `Encoder` built for training (`Encoder.build`); these are the stages' entry points."""

from __future__ import annotations

from typing import Any

import torch

from uniretrieve.models.encoder import Encoder
from uniretrieve.train.lora import lora_target_regex

Student = Encoder
"""What the stages, the loop and the checkpoints call a student: an `Encoder` from `Encoder.build`."""


build_student = Encoder.build
"""The MLLM frozen, LoRA on its language model (and the vision side if `lora.vision`): see `Encoder.build`."""


def student_for(cfg: Any, device: torch.device) -> Encoder:
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
        trust_remote_code=cfg.trust_remote_code,
    )


__all__ = ["Student", "build_student", "lora_target_regex", "student_for"]
