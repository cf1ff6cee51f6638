"""benchmarks/one_side.py's diagnostics of the starting point: `--train full` adds every language-model weight to the
LoRA's, `--reinit` draws the language model afresh and leaves the vision side as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.one_side import set_trainable
from uniretrieve.train.config import LoraConfig
from uniretrieve.train.student import build_student

pytestmark = pytest.mark.usefixtures("single_thread")


def student(model: Path):
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, vision=True)
    return build_student(str(model), lora, device="cpu", precision="fp32", prompt_regime="e5v")


def trainable_base(s) -> set[str]:
    return {n for n, _ in s.trainable_parameters() if "lora_" not in n}


def test_lora_alone_trains_only_the_adapter(tiny_model_dir: Path) -> None:
    s = student(tiny_model_dir)
    set_trainable(s, "lora")
    assert s.trainable_parameters() and not trainable_base(s)


def test_full_trains_every_language_model_weight_and_no_vision_weight(tiny_model_dir: Path) -> None:
    s = student(tiny_model_dir)
    set_trainable(s, "full")
    lm = {n for n, _ in s.parameters_under([s.spec.language_model_path]) if "lora_" not in n}
    vision = {n for n, _ in s.vision_parameters() if "lora_" not in n}
    assert lm and all(p.requires_grad for n, p in s.parameters_under([s.spec.language_model_path]))
    assert not any(p.requires_grad for n, p in s.vision_parameters() if n in vision)


def test_reinit_redraws_the_language_model_only(tiny_model_dir: Path) -> None:
    s = student(tiny_model_dir)
    lm_before = {n: p.detach().clone() for n, p in s.parameters_under([s.spec.language_model_path])}
    vision_before = {n: p.detach().clone() for n, p in s.vision_parameters()}
    set_trainable(s, "lora", reinit=True)
    std = s.base_model.config.get_text_config().initializer_range
    changed = 0
    for n, p in s.parameters_under([s.spec.language_model_path]):
        if "lora_" in n:
            assert torch.equal(p, lm_before[n])  # the adapter keeps its own initialisation (B = 0)
        elif p.dim() == 1:
            assert torch.all(p == (1.0 if "norm" in n else 0.0)), n
        else:
            changed += not torch.equal(p, lm_before[n])
            if p.numel() >= 4096:
                assert abs(p.std().item() - std) < 0.2 * std, n
    assert changed > 0
    assert all(torch.equal(p, vision_before[n]) for n, p in s.vision_parameters())
    assert not trainable_base(s)  # reinit alone does not unfreeze
