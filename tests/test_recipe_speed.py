"""The recipe's fast paths against the slow obvious versions: cached pixels, the tokenizer-only caption batch, the
float32 CLIP loss outside autocast, and bf16 autocast keeping float32 master weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_pretrain import SMALL, _write_data
from uniretrieve.tiny.base import build_base, train_tokenizer
from uniretrieve.tiny.captions import CaptionBatcher, caption_batch
from uniretrieve.tiny.pixels import PixelCache
from uniretrieve.tiny.pretrain_data import read_llava_pretrain


def _processor() -> object:
    tok = train_tokenizer(["a plain red square filling the picture", "a blue circle"] * 5, SMALL)
    return build_base(SMALL, tok)[1]


def test_pixel_cache_returns_the_processors_tensors(tmp_path: Path) -> None:
    from uniretrieve.models.images import load_image

    ex = read_llava_pretrain(_write_data(tmp_path / "d", n=6))
    paths = [e.image for e in ex]
    proc = _processor()
    cache = PixelCache(proc.image_processor)
    first = cache(paths[:4])
    again = cache([paths[3], paths[0], paths[5], paths[3]])  # cached, new and repeated rows
    ref = proc.image_processor([load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
    assert torch.equal(first, ref[:4])
    assert torch.equal(again, ref[[3, 0, 5, 3]])
    assert len(cache) == 5


def test_caption_batcher_equals_the_processor_batch(tmp_path: Path) -> None:
    from uniretrieve.models.images import load_image

    ex = read_llava_pretrain(_write_data(tmp_path / "d", n=3))
    proc = _processor()
    prompt = "[INST] <image>\nDescribe the image. [/INST]"
    text_prompt = "[INST] a red square\nSummary above sentence in one word: [/INST]"
    prompts = [prompt, text_prompt, prompt, prompt]
    paths = [ex[0].image, None, ex[1].image, ex[0].image]
    captions = ["a red square", "red square", "a much longer caption " * 20, "a blue circle"]
    batcher = CaptionBatcher(proc, max_length=24)
    for _ in range(2):  # the second call runs from the caches
        fast = batcher(prompts, paths, captions)
        slow = caption_batch(
            proc, prompts, [load_image(p) if p else None for p in paths], captions, max_length=24
        )
        assert set(fast) == set(slow)
        for key in slow:
            assert torch.equal(fast[key], slow[key]), key


def test_clip_loss_outside_autocast_is_clipmodels_loss(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from uniretrieve.tiny.clip_baseline import ClipBaselineConfig, _tokenize, build_clip, clip_loss

    proc = _processor()
    proc.save_pretrained(tmp_path / "p")
    tok = AutoTokenizer.from_pretrained(tmp_path / "p")
    cfg = ClipBaselineConfig(
        data="x", tokenizer="x", output_dir="x", text_layers=1, text_hidden=32, projection_dim=16, base=SMALL
    )
    model = build_clip(cfg, tok)
    text = _tokenize(tok, ["a red square", "a blue circle", "a plain red square filling"], 77)
    px = torch.randn(3, 3, SMALL.image_size, SMALL.image_size)
    out = model(**text, pixel_values=px, return_loss=True)
    ours = clip_loss(out.text_embeds, out.image_embeds, model.logit_scale)
    torch.testing.assert_close(ours, out.loss)


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="the CPU computes no native bf16"
)
def test_bf16_autocast_keeps_fp32_master_weights_and_the_loss() -> None:
    from uniretrieve.models.device import resolve_precision
    from uniretrieve.tiny.cpu import autocast

    assert resolve_precision("bf16-autocast", torch.device("cpu")) == (torch.float32, torch.bfloat16)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    x, y = torch.randn(128, 64), torch.randn(128, 64)
    ref = torch.nn.functional.mse_loss(net(x), y)
    with autocast(True):
        out = net(x)
    assert out.dtype == torch.bfloat16
    loss = torch.nn.functional.mse_loss(out.float(), y)
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())
    assert abs(loss.item() - ref.item()) < 0.02 * ref.item()


def test_length_sorted_text_chunks_give_the_one_pass_vectors() -> None:
    from uniretrieve.tiny.clip_baseline import _pad_rows
    from uniretrieve.tiny.dual_encoder import DualEncoder, DualEncoderSizes

    torch.manual_seed(0)
    model = DualEncoder(
        DualEncoderSizes(text_hidden=32, text_heads=2, vocab_size=50, embed_dim=16, max_positions=64),
        pad_id=0,
        logit_scale_init=10.0,
        logit_scale_max=100.0,
    )
    rows = [[1, *torch.randint(3, 50, (n,)).tolist(), 2] for n in (3, 40, 7, 25, 12, 1, 33)]
    text = _pad_rows(rows, 0)
    one = model.get_text_features(**text)
    for chunks in (2, 3, 7, 10):
        torch.testing.assert_close(model.get_text_features(**text, chunks=chunks), one, atol=1e-5, rtol=1e-5)


def test_length_sorted_clip_text_features_equal_one_pass(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from uniretrieve.tiny.clip_baseline import (
        ClipBaselineConfig,
        _pooled,
        _tokenize,
        build_clip,
        length_sorted,
    )

    proc = _processor()
    proc.save_pretrained(tmp_path / "p")
    tok = AutoTokenizer.from_pretrained(tmp_path / "p")
    cfg = ClipBaselineConfig(
        data="x", tokenizer="x", output_dir="x", text_layers=1, text_hidden=32, projection_dim=16, base=SMALL
    )
    model = build_clip(cfg, tok)
    texts = ["a red square", "a plain red square filling the picture " * 6, "blue", "a blue circle " * 3]
    text = _tokenize(tok, texts, 77)

    def fn(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=ids, attention_mask=mask))

    one = fn(text["input_ids"], text["attention_mask"])
    for chunks in (2, 4):
        got = length_sorted(fn, text["input_ids"], text["attention_mask"], chunks)
        torch.testing.assert_close(got, one, atol=1e-5, rtol=1e-5)
