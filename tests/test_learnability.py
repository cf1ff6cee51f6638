"""The learnability gate on tiny generated data: the loss drops, the curve and the scores are recorded, and the
trained encoder (also the ablation's CLIP-style row) encodes through ClipStyleEncoder and stops reading at its
token limit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from uniretrieve.train.config import OptimConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("gate") / "data"
    generate(
        GenerateConfig(
            out=str(out),
            seed=0,
            test_seed=1,
            train_scenes=96,
            test_scenes=24,
            mmeb_eval_rows=4,
            layouts=("urban1k", "sharegpt4v", "llava-pretrain"),
        )
    )
    return out


def test_gate_loss_drops_and_the_curve_is_recorded(corpus: Path, tmp_path: Path) -> None:
    from benchmarks.learnability import run_gate

    result = run_gate(
        corpus,
        tmp_path / "work",
        steps=8,
        eval_every=4,
        overrides={
            "batch_size": 16,
            "sizes": {
                "image_size": 32,
                "channels": (8, 16),
                "text_hidden": 32,
                "text_heads": 2,
                "embed_dim": 16,
            },
            "optim": OptimConfig(lr=3e-3, warmup_steps=2, schedule="cosine", max_grad_norm=1.0),
        },
    )
    losses = [
        json.loads(x)["loss"] for x in (tmp_path / "work" / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert [row["step"] for row in result["curve"]] == [4, 8]
    final = result["final"]
    for key in ("urban1k_t2i_r1", "urban1k_i2t_r1", "sharegpt4v_t2i_r1", "sharegpt4v_i2t_r1"):
        assert 0.0 <= final[key] <= 100.0
    assert result["gate_passed"] in (True, False)


def test_dual_encoder_encodes_and_cuts_at_its_token_limit(corpus: Path, tmp_path: Path) -> None:
    from benchmarks.learnability import run_gate
    from uniretrieve.tiny.clip_baseline import ClipStyleEncoder
    from uniretrieve.types import Item

    result = run_gate(
        corpus,
        tmp_path / "work",
        steps=2,
        eval_every=10,
        overrides={
            "batch_size": 8,
            "max_text_tokens": 12,
            "sizes": {
                "image_size": 32,
                "channels": (8, 16),
                "text_hidden": 32,
                "text_heads": 2,
                "embed_dim": 16,
            },
        },
    )
    enc = ClipStyleEncoder.from_pretrained(result["model_dir"])
    from PIL import Image

    img = Image.new("RGB", (40, 40), (200, 0, 0))
    vecs = enc.encode([Item(text="a red square"), Item(image=img), Item(text="red?", image=img)])
    assert vecs.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    head = " ".join(["square"] * 20)
    a, b, c = enc.encode_texts([head + " red", head + " blue", "square " * 3 + "blue"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the difference lies past the limit
    assert np.abs(a - c).max() > 1e-4


def test_a_gate_vit_initialises_the_mllm_vision_tower(corpus: Path, tmp_path: Path) -> None:
    import torch

    from benchmarks.learnability import run_gate
    from tests.test_pretrain import SMALL
    from uniretrieve.tiny.base import build_base
    from uniretrieve.tiny.pretrain import load_vision_tower

    vit = {"image_tower": "vit", "vit_patch": 16, "vit_hidden": 32, "vit_layers": 1, "vit_heads": 2}
    result = run_gate(
        corpus,
        tmp_path / "work",
        steps=2,
        eval_every=10,
        overrides={"batch_size": 8, "sizes": {"image_size": 32, "text_hidden": 32, "text_heads": 2, **vit}},
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(result["model_dir"])
    base = dataclasses.replace(SMALL, patch_size=16)  # the gate ViT's sizes
    model, _ = build_base(base, tok)
    load_vision_tower(model, Path(result["model_dir"]))
    from uniretrieve.tiny.dual_encoder import load_dual_encoder

    dual, _, _ = load_dual_encoder(Path(result["model_dir"]))
    from uniretrieve.tiny.pretrain import _vit_body

    got = _vit_body(model.model.vision_tower).embeddings.patch_embedding.weight
    assert torch.equal(got, _vit_body(dual.vit).embeddings.patch_embedding.weight)
