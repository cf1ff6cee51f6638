"""The language model's pre-alignment (tiny/align_text.py) on tiny data: only the language model trains, its loss
falls, the ViT it hands on is the vision pre-alignment's, and the recipe's pretraining starts from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uniretrieve.tiny.base import FIXTURE
from uniretrieve.tiny.config import TinyRecipeConfig
from uniretrieve.train.loop import METRICS_FILE

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 12


def _small_recipe(tmp_path: Path, **steps: object) -> TinyRecipeConfig:
    return TinyRecipeConfig(
        out=str(tmp_path / "r"),
        train_scenes=72,
        test_scenes=8,
        base=FIXTURE,
        align_steps=4,
        align_batch_size=16,
        **steps,
    )


def test_only_the_language_model_trains(tiny_model_dir: Path) -> None:
    from uniretrieve.tiny.align_text import text_encoder

    enc = text_encoder(str(tiny_model_dir))
    lm = {n for n, _ in enc.parameters_under([enc.spec.language_model_path])}
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert trainable and trainable == lm


def test_the_recipe_pretrains_from_the_aligned_language_model(tmp_path: Path) -> None:
    from uniretrieve.tiny.recipe import run_recipe

    cfg = _small_recipe(tmp_path, align_text_steps=STEPS, pretrain_steps=2)
    base = run_recipe(cfg, until="pretrain")
    root = Path(cfg.out)
    rows = [json.loads(x) for x in (root / "align-text" / METRICS_FILE).read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == STEPS and sum(losses[-3:]) < sum(losses[:3]), losses

    start = load_file(str(root / "align-text" / "start" / "model.safetensors"))
    aligned = load_file(str(root / "align-text" / "final" / "model.safetensors"))
    pretrained = load_file(str(base / "model.safetensors"))
    vit = [k for k in start if "vision_tower" in k]
    lm = [k for k in start if "language_model" in k and k.endswith("proj.weight")]
    assert vit and lm
    for k in vit:  # the vision pre-alignment's ViT, untouched by this step and (frozen) by the pretraining
        assert torch.equal(start[k].half(), aligned[k]) and torch.equal(aligned[k], pretrained[k]), k
    assert any(not torch.equal(start[k].half(), aligned[k]) for k in lm)  # the language model moved
    seconds = json.loads((root / "step_seconds.json").read_text())
    assert {"align", "align_text", "pretrain"} <= set(seconds)
    # the pretraining continued from align-text/final: its config names it as the start
    saved = (root / "base" / "config.yaml").read_text()
    assert str(root / "align-text" / "final") in saved


def test_the_pretraining_keeps_the_caption_alignment(tmp_path: Path) -> None:
    """pretrain_caption_align: both pretraining phases add the alignment term, continuing align-text's head."""
    from safetensors.torch import load_file as load

    from uniretrieve.tiny.align_text import HEAD_FILE
    from uniretrieve.tiny.recipe import run_recipe

    cfg = _small_recipe(
        tmp_path, align_text_steps=3, pretrain_steps=4, pretrain_long_steps=3, pretrain_caption_align=True
    )
    long = run_recipe(cfg, until="pretrain_long")
    root = Path(cfg.out)
    head = load(str(root / "align-text" / "final" / HEAD_FILE))
    for phase, steps in (("base", 4), ("base-long", 3)):
        rows = [json.loads(x) for x in (root / phase / METRICS_FILE).read_text().splitlines() if x.strip()]
        assert len(rows) == steps and all(r["align_loss"] > 0 and r["loss"] > 0 for r in rows), rows
        assert (root / phase / "final" / HEAD_FILE).is_file()
    first = json.loads((root / "base" / METRICS_FILE).read_text().splitlines()[0])
    # the head (and its logit scale) continued from the pre-alignment, not drawn anew at 1 / 0.07
    assert first["logit_scale"] == pytest.approx(float(head["log_scale"].exp()), rel=1e-5)
    assert abs(first["logit_scale"] - 1 / 0.07) > 1e-3
    assert long == root / "base-long" / "final"
