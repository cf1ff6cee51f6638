"""Stage 2 end to end: MMEB-train data, the chunked step = the plain step, CLI run, merged model, 2-process DDP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.stage2_fixtures import stage2_config, write_mmeb_train
from tests.train_fixtures import cli_sets, ddp_stage_worker, spawn_ranks
from uniretrieve import Encoder
from uniretrieve.cli.app import app
from uniretrieve.models.batching import length_buckets
from uniretrieve.train.config import LoraConfig, config_to_dict
from uniretrieve.train.gradcache import gradcache_step
from uniretrieve.train.losses import hard_negative_infonce
from uniretrieve.train.stage2 import HardNegConfig, hn_loss_fn, prepare_groups, run_stage2
from uniretrieve.train.stage2_data import Stage2DataConfig, Stage2DataError, load_stage2_data
from uniretrieve.train.student import build_student

pytestmark = pytest.mark.usefixtures("single_thread")


def test_subsets_caps_weights_and_prompts(tmp_path: Path) -> None:
    root = write_mmeb_train(tmp_path / "mmeb", rows=8)
    data = load_stage2_data(Stage2DataConfig(root=str(root), image_size=16))
    assert data.counts == {"Cls": 8, "T2I": 8} and len(data.pool) == 16
    mixed = load_stage2_data(
        Stage2DataConfig(root=str(root), caps={"Cls": 3}, weights={"Cls": 2.0, "T2I": 0.5}), seed=1
    )
    assert mixed.counts == {"Cls": 6, "T2I": 4}
    cls_rows = [mixed.pairs[i].row for i in mixed.pool if mixed.pairs[i].subset == "Cls"]
    assert len(set(cls_rows)) == 3 and all(cls_rows.count(r) == 2 for r in set(cls_rows))
    assert load_stage2_data(Stage2DataConfig(root=str(root), subsets=["T2I"])).counts == {"T2I": 8}

    pair = data.pairs[0]
    e5v = data.item(pair.query, pair.query_image, "e5v")
    assert e5v.text == "Represent the given image for classification" and e5v.image.size == (16, 16)
    raw = data.item(pair.query, pair.query_image, "mmeb")
    assert raw.text.startswith("<|image_1|>")
    with pytest.raises(Stage2DataError, match="Nope"):
        load_stage2_data(Stage2DataConfig(root=str(root), subsets=["Nope"]))
    with pytest.raises(Stage2DataError, match="not a folder"):
        load_stage2_data(Stage2DataConfig(root=str(tmp_path / "missing")))


def _student(model: Path) -> Any:
    torch.manual_seed(0)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, init="random")
    return build_student(str(model), lora, device="cpu", precision="fp32")


def test_chunked_step_equals_plain_full_batch_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = write_mmeb_train(tmp_path / "mmeb", rows=4)
    data = load_stage2_data(Stage2DataConfig(root=str(root), image_size=32))
    student = _student(tiny_model_dir)
    batch = list(range(len(data.pool)))  # queries and targets each mix image and text-only items
    groups, n = prepare_groups(student, data, batch, "e5v")
    assert len(groups) == 4
    loss_cfg = HardNegConfig(k=3, temperature=0.05)
    loss_fn = hn_loss_fn(groups, n, loss_cfg)

    plain = loss_fn(*[student.embed(g[2]) for g in groups])
    plain["loss"].backward()
    want = {k: p.grad.clone() for k, p in student.trainable_parameters()}
    assert all(g.abs().sum() > 0 for g in want.values())
    for chunk in (1, 3):
        for _, p in student.trainable_parameters():
            p.grad = None
        out = gradcache_step([student.embed] * len(groups), [g[2] for g in groups], loss_fn, chunk_size=chunk)
        assert out["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-5)
        for k, p in student.trainable_parameters():
            torch.testing.assert_close(
                p.grad, want[k], rtol=1e-4, atol=1e-5 * want[k].abs().max().item(), msg=k
            )


def test_labelled_negatives_join_their_query_and_chunking_keeps_the_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = write_mmeb_train(tmp_path / "mmeb", rows=4)
    assert not any(p.has_negative for p in load_stage2_data(Stage2DataConfig(root=str(root))).pairs)
    data = load_stage2_data(Stage2DataConfig(root=str(root), image_size=32, negatives=True))
    assert [p.negative for p in data.pairs] == ["green picture 0", "", "yellow picture 2", "", "", "", "", ""]
    student = _student(tiny_model_dir)
    batch = list(range(len(data.pool)))
    groups, n = prepare_groups(student, data, batch, "e5v")
    neg = [g for g in groups if g[0] == "n"]
    assert len(neg) == 1 and neg[0][1].tolist() == sorted([data.pool.index(0), data.pool.index(2)])
    loss_cfg = HardNegConfig(k=3, temperature=0.05)
    loss_fn = hn_loss_fn(groups, n, loss_cfg)
    reps = [student.embed(g[2]) for g in groups]
    plain = loss_fn(*reps)
    # The reference: the same loss with the negatives' rows assembled by hand.
    side = {s: torch.zeros(n, reps[0].shape[1]) for s in "qtn"}
    for (s, rows, _), r in zip(groups, reps, strict=True):
        side[s][rows] = r.detach()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[neg[0][1]] = True
    ref = hard_negative_infonce(
        side["q"], side["t"], k=3, temperature=0.05, negative=side["n"], negative_mask=mask
    )
    assert plain["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    assert (
        plain["loss"].item()
        > hard_negative_infonce(side["q"], side["t"], k=3, temperature=0.05)["loss"].item()
    )
    plain["loss"].backward()
    want = {k: p.grad.clone() for k, p in student.trainable_parameters()}
    for _, p in student.trainable_parameters():
        p.grad = None
    out = gradcache_step([student.embed] * len(groups), [g[2] for g in groups], loss_fn, chunk_size=2)
    assert out["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-5)
    for k, p in student.trainable_parameters():
        torch.testing.assert_close(p.grad, want[k], rtol=1e-4, atol=1e-5 * want[k].abs().max().item(), msg=k)


def _cli_stage2(model: Path, data: Path, out: Path, *args: str) -> Any:
    """`uniretrieve train stage2 --model MODEL --data DATA -o OUT ARGS…`."""
    return CliRunner().invoke(
        app, ["train", "stage2", "--model", str(model), "--data", str(data), "-o", str(out), *args]
    )


def test_cli_stage2_trains_and_merges(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = write_mmeb_train(tmp_path / "mmeb", rows=8)
    out = tmp_path / "run"
    res = _cli_stage2(
        tiny_model_dir,
        root,
        out,
        "--max-steps",
        "3",
        "--merge",
        *cli_sets(
            "batch_size=8",
            "chunk_size=4",
            "loss.k=3",
            "data.image_size=32",
            "log_every=1",
            "loss.in_batch_warmup_steps=2",
        ),
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["loss"] == r["loss"] for r in rows)  # finite
    assert [r["in_batch"] for r in rows] == [1.0, 1.0, 0.0]  # the warm-up steps use the in-batch loss
    assert {"false_negative_rate", "hard_negative_sim"} <= rows[0].keys()
    enc = Encoder.from_pretrained(str(out / "merged"), device="cpu")
    base = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    assert (enc.encode_texts(["red picture"]) != base.encode_texts(["red picture"])).any()
    bad = _cli_stage2(tiny_model_dir, tmp_path / "nope", tmp_path / "r2")
    assert bad.exit_code != 0 and "not a folder" in bad.output


def test_two_processes_equal_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = write_mmeb_train(tmp_path / "mmeb", rows=8)
    common = {"lora.dropout": 0.0, "lora.init": "random", "max_steps": 2}
    one = stage2_config(tiny_model_dir, root, tmp_path / "one", **common)
    run_stage2(one)
    two = stage2_config(tiny_model_dir, root, tmp_path / "two", **common)
    spawn_ranks(ddp_stage_worker, "stage2", config_to_dict(two))
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert lb == pytest.approx(la, rel=1e-5)
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("preset", ["stage2-tiny", "stage2-llava-next-mistral-7b"])
def test_stage2_presets_parse(preset: str) -> None:
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config

    cfg = load_config(Stage2Config, preset, [], model="m", output_dir="o", **{"data.root": "d"})
    assert cfg.loss.k == 8 and cfg.loss.beta == pytest.approx(0.1)
    if preset == "stage2-tiny":  # scaled to the tiny model, each value measured (see the preset's header)
        assert cfg.loss.temperature == pytest.approx(0.05) and cfg.loss.in_batch_warmup_steps == 100
        assert cfg.prompt_regime == "e5v" and cfg.lora.vision and cfg.data.negatives
        assert cfg.data.image_size == 64 and cfg.max_text_tokens == 320
        assert cfg.batch_size == 64 and cfg.bucket_fill == pytest.approx(0.5)
    else:  # the paper's values (docs/method.md#stage-2-settings; τ from the official loss.py)
        assert cfg.loss.temperature == pytest.approx(0.02) and cfg.loss.in_batch_warmup_steps == 0
        assert not cfg.data.negatives  # UniME mines its negatives from the batch only


def test_length_buckets_keep_each_group_mostly_real_tokens() -> None:
    lengths = [300, 12, 250, 40, 299, 11, 100]
    buckets = length_buckets(lengths, min_fill=0.75)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))  # every row once
    assert buckets == [[0, 4, 2], [6], [3], [1, 5]]
    for b in buckets:
        assert min(lengths[i] for i in b) >= 0.75 * max(lengths[i] for i in b)
    assert length_buckets(lengths, min_fill=0.0) == [sorted(range(7), key=lambda i: -lengths[i])]
    assert length_buckets([], min_fill=0.5) == []


def test_length_bucketed_groups_give_the_one_group_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Rows embed independently (left padding is masked; RoPE sees only relative positions), so splitting a side
    by token count changes the compute, not the loss or the gradient."""
    root = write_mmeb_train(tmp_path / "mmeb", rows=4)
    data = load_stage2_data(Stage2DataConfig(root=str(root), image_size=32, negatives=True))
    student = _student(tiny_model_dir)
    batch = list(range(len(data.pool)))
    runs = {}
    for fill in (0.0, 1.0):
        groups, n = prepare_groups(student, data, batch, "e5v", fill)
        for _, p in student.trainable_parameters():
            p.grad = None
        out = hn_loss_fn(groups, n, HardNegConfig(k=3, temperature=0.05), negatives=True)(
            *[student.embed(g[2]) for g in groups]
        )
        out["loss"].backward()
        padded = sum(g[2]["attention_mask"].numel() for g in groups)
        runs[fill] = (
            len(groups),
            padded,
            out["loss"].item(),
            {k: p.grad.clone() for k, p in student.trainable_parameters()},
        )
    (g0, pad0, loss0, grad0), (g1, pad1, loss1, grad1) = runs[0.0], runs[1.0]
    assert g1 > g0 and pad1 < pad0  # the split happened and dropped padding
    assert loss1 == pytest.approx(loss0, rel=1e-5)
    for k in grad0:
        torch.testing.assert_close(
            grad1[k], grad0[k], rtol=1e-4, atol=1e-5 * grad0[k].abs().max().item(), msg=k
        )
