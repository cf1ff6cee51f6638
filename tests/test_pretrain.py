"""Generative pretraining of the tiny base: caption-only labels, the loss falls, exact resume, loadable result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import make_image
from uniretrieve import Encoder
from uniretrieve.tiny.base import TinyBaseConfig
from uniretrieve.tiny.captions import caption_batch
from uniretrieve.tiny.pretrain import PretrainConfig, pretrain
from uniretrieve.tiny.pretrain_data import PretrainDataError, read_llava_pretrain
from uniretrieve.train.checkpoint import CheckpointError
from uniretrieve.train.config import StepCheckpointConfig

SMALL = TinyBaseConfig(
    vocab_size=400,
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_intermediate=64,
)
COLOURS = ["red", "green", "blue", "yellow"]


def _write_data(root: Path, n: int = 16) -> Path:
    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(n):
        c = COLOURS[i % 4]
        rgb = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 220, 20)}[
            c
        ]
        from PIL import Image

        Image.new("RGB", (40, 40), rgb).save(root / "images" / f"s{i}.png")
        entries.append(
            {
                "id": f"s{i}",
                "image": f"s{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image."},
                    {"from": "gpt", "value": f"a plain {c} square filling the picture"},
                ],
            }
        )
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(entries))
    return root


def _cfg(data: Path, out: Path, steps: int, **kw) -> PretrainConfig:
    return PretrainConfig(
        data=str(data),
        output_dir=str(out),
        batch_size=8,
        max_steps=steps,
        log_every=1,
        **{"base": SMALL, **kw},
    )


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_labels_cover_only_the_caption(tmp_path: Path) -> None:
    from uniretrieve.tiny.base import build_base, train_tokenizer

    tok = train_tokenizer(["a red square", "a blue circle"] * 5, SMALL)
    _, proc = build_base(SMALL, tok)
    prompt = "[INST] <image>\nDescribe the image. [/INST]"
    b = caption_batch(
        proc,
        [prompt, prompt],
        [make_image(0), make_image(1)],
        ["a red square", "a much longer caption about a blue circle"],
        max_length=64,
    )
    for row in range(2):
        scored = b["input_ids"][row][b["labels"][row] != -100]
        text = tok.decode(scored)
        assert text.strip() in ("a red square</s>", "a much longer caption about a blue circle</s>")
    # a text-only row (no image token) beside an image row: each scores its answer alone
    text_prompt = "[INST] a red square\nSummary above sentence in one word: [/INST]"
    b = caption_batch(
        proc, [prompt, text_prompt], [make_image(0), None], ["a red square", "red square"], max_length=64
    )
    assert b["pixel_values"].shape[0] == 1
    assert [tok.decode(b["input_ids"][r][b["labels"][r] != -100]).strip() for r in range(2)] == [
        "a red square</s>",
        "red square</s>",
    ]


class Crash(RuntimeError):
    pass


def crash_at(mp: pytest.MonkeyPatch, module: Any, at: int) -> None:
    """Make `module.make_step_fn`'s step function raise at 0-based step `at` (a simulated crash)."""
    real = module.make_step_fn

    def crashing(*args: Any, **kwargs: Any) -> Any:
        step_fn = real(*args, **kwargs)

        def step(step: int, batch: list[int]) -> Any:
            if step == at:
                raise Crash("simulated crash")
            return step_fn(step, batch)

        return step

    mp.setattr(module, "make_step_fn", crashing)


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_pretraining_lowers_loss_resumes_exactly_and_loads(tmp_path: Path) -> None:
    import uniretrieve.tiny.pretrain as run

    data = _write_data(tmp_path / "data")
    full = tmp_path / "full"
    final = pretrain(_cfg(data, full, 6))
    losses = _losses(full)
    assert len(losses) == 6 and losses[-1] < losses[0]

    part = tmp_path / "part"
    every3 = StepCheckpointConfig(every_steps=3, keep_last=1)
    with pytest.MonkeyPatch.context() as mp:
        crash_at(mp, run, 4)  # after the step-3 checkpoint and the logged step 4: the crash loses step 4
        with pytest.raises(Crash):
            pretrain(_cfg(data, part, 6, checkpoint=every3))
    assert len(_losses(part)) == 4
    resumed = pretrain(_cfg(data, part, 6, checkpoint=every3))  # continues from checkpoints/step-000003
    assert _losses(part) == losses  # the same steps, bit-identical losses
    assert same_weights(final / "model.safetensors", resumed / "model.safetensors")

    with pytest.raises(CheckpointError, match=r"differs in max_steps: 6 → 8") as err:
        pretrain(_cfg(data, part, 8, checkpoint=every3))
    assert "\n" not in str(err.value)
    from typer.testing import CliRunner

    from uniretrieve.cli.app import app

    args = ["train", "pretrain", "--data", str(data), "--output-dir", str(part), "--max-steps", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "error: cannot resume" in res.output and "Traceback" not in res.output

    enc = Encoder.from_pretrained(str(final), device="cpu")
    assert enc.family == "llava" and enc.input_builder.wrapper.name == "mistral"
    assert enc.encode_texts(["a red square"]).shape == (1, SMALL.text_hidden)


def test_max_caption_words_keeps_only_short_captions(tmp_path: Path) -> None:
    from uniretrieve.tiny.pretrain import training_examples
    from uniretrieve.train.config import ConfigError

    data = _write_data(tmp_path / "data", n=4)
    entries = json.loads((data / "blip_laion_cc_sbu_558k.json").read_text())
    long = "a plain red square filling the picture, drawn with a darker red outline on nothing else at all"
    entries.append(
        {
            "id": "long",
            "image": "s0.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image in detail."},
                {"from": "gpt", "value": long},
            ],
        }
    )
    (data / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(entries))
    assert len(training_examples(_cfg(data, tmp_path / "o", 1))) == 5
    short = training_examples(_cfg(data, tmp_path / "o", 1, max_caption_words=10))
    assert len(short) == 4 and all(e.caption != long for e in short)
    with pytest.raises(ConfigError, match="at most 2 words"):
        training_examples(_cfg(data, tmp_path / "o", 1, max_caption_words=2))


def test_bad_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(PretrainDataError, match="not found"):
        read_llava_pretrain(tmp_path)
    (tmp_path / "blip_laion_cc_sbu_558k.json").write_text(json.dumps([{"id": 1, "image": "x.png"}]))
    with pytest.raises(PretrainDataError, match="entry 0"):
        read_llava_pretrain(tmp_path)


def test_length_grouped_epochs_cover_every_example_once_with_less_padding() -> None:
    from uniretrieve.tiny.pretrain import LengthGroupedEpochs

    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.choice([10, 200], size=256)]
    plan = LengthGroupedEpochs(lengths, 8, seed=3, group=8)
    for epoch in range(2):
        seen = [
            i
            for b in range(plan.steps_per_epoch)
            for i in plan.global_batch(epoch * plan.steps_per_epoch + b)
        ]
        assert sorted(seen) == list(range(256))
    pad = sum(max(lengths[i] for i in plan.global_batch(s)) * 8 for s in range(plan.steps_per_epoch))
    from uniretrieve.train.batching import ShuffledEpochs

    plain = ShuffledEpochs(256, 8, seed=3)
    pad_plain = sum(max(lengths[i] for i in plain.global_batch(s)) * 8 for s in range(plain.steps_per_epoch))
    assert pad < 0.7 * pad_plain
    assert plan.global_batch(5) == LengthGroupedEpochs(lengths, 8, seed=3, group=8).global_batch(5)


@pytest.mark.parametrize("option", ["--init", "--vision-init"])
def test_a_missing_start_model_is_one_line_exit_2(option: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from uniretrieve.cli.app import app

    data = tmp_path / "pairs.json"
    data.write_text("[]")
    out = tmp_path / "run"
    args = ["train", "pretrain", "--data", str(data), option, str(tmp_path / "nope"), "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and f"{option} {tmp_path / 'nope'}" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_the_class_token_option_feeds_the_vits_last_layer_with_its_class_token() -> None:
    from dataclasses import replace

    from uniretrieve.tiny.base import build_base, train_tokenizer

    tok = train_tokenizer(["a red square", "a blue circle"] * 5, SMALL)
    full = replace(SMALL, vision_feature_layer=-1, vision_feature_select_strategy="full")
    for cfg, tokens, layer, first in ((SMALL, 16, -2, 1), (full, 17, -1, 0)):
        model, proc = build_base(cfg, tok)
        b = caption_batch(
            proc, ["[INST] <image>\nDescribe. [/INST]"], [make_image(0)], ["a red square"], max_length=64
        )
        assert int((b["input_ids"] == model.config.image_token_id).sum()) == tokens
        with torch.no_grad():
            px = b["pixel_values"]
            hidden = model.model.vision_tower(px, output_hidden_states=True).hidden_states[layer]
            want = model.model.multi_modal_projector(hidden[:, first:])
            got = torch.stack(model.model.get_image_features(pixel_values=px).pooler_output)
        torch.testing.assert_close(got, want)


def test_a_saved_processor_of_another_base_gives_only_its_tokenizer(tmp_path: Path) -> None:
    # The vision pre-alignment makes `processor/` first; a base that keeps the class token must still get 17
    # image tokens per image, not the saved processor's 16.
    from dataclasses import replace

    from uniretrieve.tiny.pretrain import make_processor

    data = _write_data(tmp_path / "data")
    out = tmp_path / "run"
    make_processor(data, out, SMALL)
    full = replace(SMALL, vision_feature_layer=-1, vision_feature_select_strategy="full")
    final = pretrain(_cfg(data, out, 2, base=full))
    enc = Encoder.from_pretrained(str(final), device="cpu")
    ids = enc.processor(text="<image>", images=make_image(0), return_tensors="pt")["input_ids"]
    assert int((ids == enc.model.config.image_token_id).sum()) == 17
    assert enc.encode_images([make_image(1)]).shape == (1, SMALL.text_hidden)
