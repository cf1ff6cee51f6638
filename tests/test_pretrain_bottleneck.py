"""Captions generated through the embedding position (`bottleneck_min_words`): the mask, the prompt, a run."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.test_pretrain import _cfg, _losses, _write_data
from uniretrieve.models.backbones import REGISTRY
from uniretrieve.models.prompts import render
from uniretrieve.tiny.captions import bottleneck_mask, caption_prompt
from uniretrieve.tiny.pretrain import SUMMARY_REQUEST, pretrain
from uniretrieve.train.config import OptimConfig


def test_caption_tokens_see_only_the_prompts_last_token() -> None:
    # row 0: prompt of 3, caption of 2, 1 pad, through the bottleneck; row 1: plain causal, no padding
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    m = bottleneck_mask(mask, [3, 2], [True, False])[:, 0]
    assert m.shape == (2, 6, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert torch.equal(m[1], causal)  # an unmarked row is the ordinary causal mask
    r = m[0]
    for q in range(3):  # prompt tokens: causal over the prompt
        assert r[q].tolist() == [k <= q for k in range(6)]
    assert r[3].tolist() == [False, False, True, True, False, False]  # first caption token: gist + itself
    assert r[4].tolist() == [False, False, True, True, True, False]
    assert r[5].tolist() == [False] * 5 + [True]  # padding: itself only, never an empty softmax row


def test_the_bottleneck_prompt_is_the_embedding_prompt() -> None:
    """The position the captions are generated through is the one the Encoder pools."""
    spec = REGISTRY["llava"]
    wrapper = spec.wrapper_for("mistral", frozenset())
    assert caption_prompt(wrapper.template, "<image>", SUMMARY_REQUEST) == render(
        spec, wrapper, "e5v", text=None, has_image=True
    )


def test_pretraining_through_the_embedding_position_lowers_the_loss(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "d")
    out = tmp_path / "run"
    cfg = _cfg(
        data,
        out,
        40,
        bottleneck_min_words=3,
        optim=OptimConfig(lr=3e-3, warmup_steps=5, max_grad_norm=1.0),
    )
    pretrain(cfg)
    losses = _losses(out)
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
