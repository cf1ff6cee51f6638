"""The encode benchmark measures what it claims: the reference loop and the Encoder paths give the same embeddings
on the same tokens, the FLOP count is the Encoder's (no LM head), presets are the real architectures' sizes, and
the one command produces a complete report. Speed itself is never asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig
from typer.testing import CliRunner

from benchmarks.encode_inputs import captions, write_images
from benchmarks.encode_throughput import app
from benchmarks.encoder_runs import encoder_flops, run_in_process, run_with_workers
from benchmarks.model_configs import PRESETS, build_checkpoint, parameter_count
from benchmarks.reference_loop import run_reference
from uniretrieve.models.encoder import Encoder
from uniretrieve.types import Item


@pytest.fixture(autouse=True)
def _restore_threads():
    """The CLI runs below pass --threads 1 (small ops on a shared CPU are fastest single-threaded); undo it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Encoder, list[Item], list[Item]]:
    root = tmp_path_factory.mktemp("bench-encode")
    enc = Encoder.from_pretrained(str(build_checkpoint(PRESETS["tiny"], root / "model")), device="cpu")
    images = [Item(image=p) for p in write_images(root / "img", 3, size=(64, 48))]
    texts = [Item(text=t) for t in captions(7, seed=1, long_fraction=0.5)]
    return enc, images, texts


def _reference(enc: Encoder, items: list[Item], modality: str, batch_size: int, workers: int):
    prompts = [enc.input_builder.prompt(it)[0] for it in items]
    pics = [it.image for it in items] if modality == "images" else None
    return run_reference(
        enc.model,
        enc.processor,
        prompts=prompts,
        images=pics,
        modality=modality,
        batch_size=batch_size,
        device=enc.device,
        dtype=enc.dtype,
        workers=workers,
    )


@pytest.mark.parametrize("modality", ["images", "texts"])
def test_every_path_matches_the_reference_on_the_same_tokens(tiny, modality: str) -> None:
    enc, images, texts = tiny
    items = images if modality == "images" else texts
    ref = _reference(enc, items, modality, batch_size=1 if modality == "images" else 3, workers=1)
    ours = [
        run_in_process(enc, items, modality=modality, batch_size=4),
        run_with_workers(enc, items, modality=modality, batch_size=4, workers=1),
    ]
    assert ref.embeddings.shape == (len(items), enc.dim)
    for run in ours:
        assert run.items == ref.items == len(items)
        assert run.tokens == ref.tokens > 0
        cos = (ref.embeddings * run.embeddings).sum(axis=1)
        assert cos.min() >= 0.9999, (run.path, cos)
    # distinct inputs give distinct vectors, so a row mix-up could not pass
    assert np.abs(ref.embeddings[0] - ref.embeddings[1]).max() > 1e-3


def test_in_process_run_is_encode(tiny) -> None:
    enc, _, texts = tiny
    run = run_in_process(enc, texts, modality="texts", batch_size=3)
    np.testing.assert_allclose(run.embeddings, enc.encode(texts, batch_size=3), atol=1e-6)
    assert run.prep_seconds is not None and run.forward_seconds is not None
    assert run.prep_seconds + run.forward_seconds <= run.seconds


def test_flop_count_is_the_base_forward_without_lm_head(tiny) -> None:
    enc, _, texts = tiny
    text = enc.model.config.text_config
    hd = text.hidden_size // text.num_attention_heads
    kv = text.num_key_value_heads * hd
    per_token = 2 * (
        2 * text.hidden_size**2 + 2 * text.hidden_size * kv + 3 * text.hidden_size * text.intermediate_size
    )
    expected = 0
    for idx in enc.batches(texts, 3):
        b, t = enc.input_builder([texts[i] for i in idx]).inputs["input_ids"].shape
        # linear layers per token, plus QK^T and AV (2 matmuls of 2·t·t·hd FLOPs per head)
        expected += text.num_hidden_layers * (
            b * t * per_token + 4 * b * text.num_attention_heads * t * t * hd
        )
    assert encoder_flops(enc, texts, batch_size=3) == expected


@pytest.mark.parametrize(
    ("name", "published"),
    # hub model cards: llava-hf/llava-v1.6-mistral-7b-hf 7.57B, Qwen/Qwen2-VL-2B-Instruct 2.21B,
    # llava-hf/llava-onevision-qwen2-7b-ov-hf 8.03B, Qwen/Qwen2-VL-7B-Instruct 8.29B
    [
        ("llava-next-mistral-7b", 7.57e9),
        ("qwen2-vl-2b", 2.21e9),
        ("llava-onevision-7b", 8.03e9),
        ("qwen2-vl-7b", 8.29e9),
    ],
)
def test_gpu_presets_have_the_real_sizes(name: str, published: float) -> None:
    assert PRESETS[name].device == "cuda" and PRESETS[name].dtype == "bfloat16"
    assert parameter_count(PRESETS[name]) == pytest.approx(published, rel=0.01)


def _bench_json(
    tmp_path: Path, preset: str, images: int, texts: int, workers: int, *args: str
) -> dict[str, Any]:
    """The one preset's record of a `--json` run of the benchmark command (one thread, cache under tmp_path)."""
    result = CliRunner().invoke(
        app,
        [
            *("--preset", preset, "--threads", "1", "--images", str(images), "--texts", str(texts)),
            *("--workers", str(workers), *args, "--json", "--cache-dir", str(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    (rec,) = json.loads(result.stdout)["presets"]
    return rec


def test_one_command_writes_a_complete_json_report(tmp_path: Path) -> None:
    rec = _bench_json(tmp_path, "tiny", 2, 5, 1, "--mfu", "--bf16")
    assert rec["preset"] == "tiny"
    paths = {(r["modality"], r["path"]) for r in rec["runs"]}
    assert paths == {
        (m, p) for m in ("images", "texts") for p in ("reference", "encoder", "encoder+1w", "encoder bf16")
    }
    for r in rec["runs"]:
        assert r["min_cos_vs_reference"] >= (0.99 if r["path"] == "encoder bf16" else 0.999)
        assert r["items"] == (2 if r["modality"] == "images" else 5)
        assert r["items_per_s"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] > 0
        assert r["cpu_seconds"] > 0 and r["cpu_speedup_vs_reference"] > 0
        if r["path"] == "reference":
            assert r["speedup_vs_reference"] == 1.0 == r["cpu_speedup_vs_reference"]
    # Same image prompts, no padding: the reference's extra FLOPs are exactly its LM head over every position.
    img = next(r for r in rec["runs"] if r["modality"] == "images" and r["path"] == "reference")
    flops = rec["flops_per_item"]["images"]
    text = AutoConfig.from_pretrained(tmp_path / "model-tiny").text_config
    per_item_tokens = img["tokens"] / img["items"]
    assert flops["reference"] - flops["encoder"] == 2 * per_item_tokens * text.hidden_size * text.vocab_size


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["--device", "cuda"])
    assert result.exit_code != 0
    assert "no CUDA device" in result.output


@pytest.mark.parametrize("name", ["qwen2-vl-2b", "llava-next-mistral-7b"])
def test_gpu_presets_data_path_runs_shrunk_on_cpu(name: str, tmp_path: Path) -> None:
    """The 7B-class presets' processors (336-px images, anyres tiling, dynamic resolution) feed their model
    classes, and the Encoder matches the reference on them: the GPU run differs only in size and dtype."""
    rec = _bench_json(tmp_path, name, 2, 2, 0, "--shrink")
    assert rec["preset"] == f"{name}-shrunk"
    images = [r for r in rec["runs"] if r["modality"] == "images"]
    assert {r["path"] for r in images} == {"reference", "encoder"}
    assert min(r["min_cos_vs_reference"] for r in rec["runs"]) >= 0.999
    assert images[0]["tokens"] > 2 * 100  # every image brings its many vision tokens


def test_gpu_preset_on_cpu_needs_shrink() -> None:
    result = CliRunner().invoke(app, ["--preset", "llava-next-mistral-7b"])
    assert result.exit_code != 0
    assert "--shrink" in result.output


def test_profile_batching_rule_keeps_every_item_once_within_budget(tiny) -> None:
    from benchmarks.encode_profile import token_budget_batches

    enc, _, texts = tiny
    many = texts * 3
    batches = list(token_budget_batches(enc, 400)(many, 8))
    assert sorted(i for b in batches for i in b) == list(range(len(many)))
    for b in batches:
        t = enc.input_builder([many[i] for i in b]).inputs["input_ids"].shape[1]
        assert len(b) <= 8 and (len(b) == 1 or len(b) * t <= 400)
    np.testing.assert_allclose(  # the rule changes only grouping, never the vectors
        run_in_process(
            _with_batches(enc, token_budget_batches(enc, 400)), many, modality="t", batch_size=8
        ).embeddings,
        enc.encode(many, batch_size=8),
        atol=1e-5,
    )


def _with_batches(enc: Encoder, rule) -> Encoder:
    import copy

    other = copy.copy(enc)
    other.batches = rule  # type: ignore[method-assign]
    return other


def test_vision_trim_variant_leaves_image_embeddings_unchanged(tiny) -> None:
    import copy

    from benchmarks.encode_profile import _trim_vision

    enc, images, _ = tiny
    trimmed = copy.deepcopy(enc)
    assert _trim_vision(trimmed)  # the tiny LLaVA reads CLIP layer -2 of 2, so its last layer is unused
    np.testing.assert_allclose(trimmed.encode(images), enc.encode(images), atol=1e-6)
