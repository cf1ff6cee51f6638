"""The ablation's CLIP-style dual encoder: trains, encodes like Encoder, and really stops reading at 77 tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_pretrain import SMALL, Crash, _losses, _write_data, crash_at, same_weights
from uniretrieve.tiny.base import build_base, train_tokenizer
from uniretrieve.tiny.clip_baseline import ClipBaselineConfig, ClipStyleEncoder, train_clip_baseline
from uniretrieve.train.checkpoint import CheckpointError
from uniretrieve.train.config import StepCheckpointConfig
from uniretrieve.types import Item


def test_clip_baseline_trains_and_truncates_at_77_tokens(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    tok = train_tokenizer(["a plain red square filling the picture"] * 10, SMALL)
    _, proc = build_base(SMALL, tok)
    proc.save_pretrained(tmp_path / "proc")
    cfg = ClipBaselineConfig(
        data=str(data),
        tokenizer=str(tmp_path / "proc"),
        output_dir=str(tmp_path / "clip"),
        batch_size=8,
        max_steps=6,
        log_every=1,
        text_layers=1,
        text_hidden=32,
        projection_dim=16,
        base=SMALL,
    )
    final = train_clip_baseline(cfg)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    enc = ClipStyleEncoder.from_pretrained(final)
    from PIL import Image

    img = Image.new("RGB", (40, 40), (200, 0, 0))
    vecs = enc.encode([Item(text="a red square"), Item(image=img), Item(text="red?", image=img)])
    assert vecs.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)

    head = " ".join(["square"] * 90)
    a, b, c = enc.encode_texts([head + " red", head + " blue", "square " * 3 + "blue"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the difference lies past token 77: invisible to CLIP
    assert np.abs(a - c).max() > 1e-3


def test_clip_vision_tower_initialises_the_mllm_vit(tmp_path: Path) -> None:
    import torch

    from uniretrieve.tiny.clip_baseline import build_clip
    from uniretrieve.tiny.pretrain import load_vision_tower

    tok = train_tokenizer(["a plain red square"] * 10, SMALL)
    cfg = ClipBaselineConfig(
        data="x",
        tokenizer="x",
        output_dir="x",
        text_layers=1,
        text_hidden=32,
        projection_dim=16,
        base=SMALL,
        seed=3,
    )
    clip = build_clip(cfg, tok)
    clip.save_pretrained(tmp_path / "clip")
    model, _ = build_base(SMALL, tok)
    tower = model.model.vision_tower
    before = tower.state_dict()["embeddings.patch_embedding.weight"].clone()
    load_vision_tower(model, tmp_path / "clip")
    after = tower.state_dict()["embeddings.patch_embedding.weight"]
    want = clip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(after, want) and not torch.equal(before, want)


def test_clip_baseline_resumes_exactly_and_refuses_a_changed_config(tmp_path: Path) -> None:
    import uniretrieve.tiny.clip_baseline as clip

    data = _write_data(tmp_path / "data")
    tok = train_tokenizer(["a plain red square filling the picture"] * 10, SMALL)
    tok.save_pretrained(tmp_path / "tok")

    def cfg(out: str, **kw: Any) -> ClipBaselineConfig:
        small = {"batch_size": 4, "max_steps": 5, "text_layers": 1, "text_hidden": 32, "projection_dim": 16}
        return ClipBaselineConfig(
            data=str(data),
            tokenizer=str(tmp_path / "tok"),
            output_dir=str(tmp_path / out),
            log_every=1,
            base=SMALL,
            **{**small, **kw},
        )

    full = train_clip_baseline(cfg("full"))
    every2 = StepCheckpointConfig(every_steps=2, keep_last=1)
    with pytest.MonkeyPatch.context() as mp:
        crash_at(mp, clip, 3)  # after the step-2 checkpoint and the logged step 3
        with pytest.raises(Crash):
            train_clip_baseline(cfg("part", checkpoint=every2))
    part = tmp_path / "part"
    assert len(_losses(part)) == 3
    resumed = train_clip_baseline(cfg("part", checkpoint=every2))
    assert _losses(part) == _losses(tmp_path / "full")
    assert same_weights(full / "model.safetensors", resumed / "model.safetensors")

    with pytest.raises(CheckpointError, match=r"differs in batch_size: 4 → 8") as err:
        train_clip_baseline(cfg("part", checkpoint=every2, batch_size=8))
    assert "\n" not in str(err.value)
