"""`uniretrieve eval` end to end on tiny fixtures with the tiny LLaVA: every benchmark, scores checked against a
direct brute-force evaluation, the embedding cache reused, the paper's numbers beside ours, missing-data errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.eval_helpers import (
    mmeb_classification_rows,
    mmeb_retrieval_rows,
    write_e5v,
    write_mmeb,
    write_sharegpt4v,
    write_sugarcrepe,
    write_urban1k,
)
from uniretrieve.cli.app import app
from uniretrieve.eval.cache import EmbeddingCache
from uniretrieve.types import Item

runner = CliRunner()


def _eval(tmp_path: Path, model: Path, bench: str, data: Path, *extra: str, name: str = "r.json"):
    out = tmp_path / name
    res = runner.invoke(
        app,
        [
            "eval",
            bench,
            "--data",
            str(data),
            "--model",
            str(model),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--workers",
            "0",
            "-q",
            *extra,
        ],
        env={"COLUMNS": "200"},
    )
    return res, (json.loads(out.read_text()) if out.exists() else None)


@pytest.fixture(scope="module")
def encoders(tiny_checkpoints):
    from uniretrieve.models.encoder import Encoder

    d = str(tiny_checkpoints("llava"))
    return {r: Encoder.from_pretrained(d, prompt_regime=r) for r in ("e5v", "mmeb")}


def _brute_recall(scores: np.ndarray, positives: list[set[int]], k: int) -> float:
    hits = 0
    for q, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda j: (-float(row[j]), j))
        hits += any(j in positives[q] for j in order[:k])
    return 100.0 * hits / len(scores)


def test_flickr30k_end_to_end_and_cache_reuse(
    tmp_path: Path, tiny_model_dir: Path, encoders, monkeypatch
) -> None:
    caps = write_e5v(tmp_path / "flickr", n_images=3, captions=6)
    res, out = _eval(tmp_path, tiny_model_dir, "flickr30k", tmp_path / "flickr")
    assert res.exit_code == 0, res.output
    s = out["scores"]
    assert (s["images"], s["texts"]) == (3, 15)
    assert out["embedding"]["encoded"] == 18 and out["embedding"]["from_cache"] == 0
    assert out["model"]["prompt_regime"] == "e5v" and out["config"]["benchmark"] == "flickr30k"
    assert out["paper"] is None and "T→I R@1" in res.output

    # Brute force from a direct encoding of the same images and captions.
    tbl = pq.read_table(next((tmp_path / "flickr" / "data").glob("*.parquet"))).to_pylist()
    enc = encoders["e5v"]
    img = enc.encode([Item(image=Image.open(io.BytesIO(r["image"]["bytes"]))) for r in tbl])
    txt = enc.encode([Item(text=c) for per in caps for c in per[:5]])
    scores = txt @ img.T
    owner = np.repeat(np.arange(3), 5)
    for k in (1, 5, 10):
        assert s["t2i"][f"R@{k}"] == pytest.approx(_brute_recall(scores, [{int(o)} for o in owner], k))
        caps_of = [set(np.flatnonzero(owner == i).tolist()) for i in range(3)]
        assert s["i2t"][f"R@{k}"] == pytest.approx(_brute_recall(scores.T, caps_of, k))

    # Second run: everything from the cache, nothing encoded, identical scores.
    def no_forward(*a, **k):
        raise AssertionError("the model ran although every embedding is cached")

    monkeypatch.setattr("uniretrieve.models.encoder.Encoder.forward", no_forward)
    res2, out2 = _eval(tmp_path, tiny_model_dir, "flickr30k", tmp_path / "flickr", name="r2.json")
    assert res2.exit_code == 0, res2.output
    assert out2["embedding"] == {"encoded": 0, "from_cache": 18, "texts_truncated": 0}
    assert out2["scores"]["t2i"] == s["t2i"] and out2["scores"]["i2t"] == s["i2t"]
    # The cache entries are ordinary shard directories (manifest + Parquet shard in the embed schema).
    entries = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").glob("*/*") if p.is_dir())
    assert entries == ["flickr30k.images", "flickr30k.texts"]
    assert all((p / "manifest.json").is_file() for p in (tmp_path / "cache").glob("*/*"))


def test_cache_misses_when_sources_or_model_change(tmp_path: Path, encoders) -> None:
    from uniretrieve.eval.sources import Source

    srcs = [Source(text="a"), Source(text="b")]
    vec = np.eye(2, encoders["e5v"].dim, dtype=np.float32)
    cache = EmbeddingCache(tmp_path, encoders["e5v"].describe())
    cache.save("x", srcs, vec)
    assert np.array_equal(cache.load("x", srcs), vec)
    assert cache.load("x", [Source(text="a"), Source(text="c")]) is None
    assert cache.load("x", srcs[::-1]) is None
    assert EmbeddingCache(tmp_path, encoders["mmeb"].describe()).load("x", srcs) is None
    assert EmbeddingCache(None, encoders["e5v"].describe()).load("x", srcs) is None


def test_cache_entry_is_a_shard_directory_that_open_shards_reads(tmp_path: Path, encoders) -> None:
    from uniretrieve.embed.reader import open_shards
    from uniretrieve.eval.cache import source_id
    from uniretrieve.eval.sources import Source

    srcs = [Source(text="a"), Source(text="b")]
    vec = np.eye(2, encoders["e5v"].dim, dtype=np.float32)
    cache = EmbeddingCache(tmp_path, encoders["e5v"].describe())
    d = cache.save("x", srcs, vec)
    ss = open_shards(d, verify_checksums=True)
    vectors, table = ss.read_all(columns=("id", "text"))
    assert ss.complete and ss.spec == cache.spec("x", srcs)
    assert table.column("id").to_pylist() == [source_id(s) for s in srcs]
    assert table.column("text").to_pylist() == ["a", "b"]
    np.testing.assert_array_equal(vectors, vec)
    cache.save("x", srcs, vec[::-1].copy())  # a rewrite replaces the entry whole
    np.testing.assert_array_equal(cache.load("x", srcs), vec[::-1])
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temp or old directory left beside it


@pytest.mark.parametrize("bench", ["coco", "sharegpt4v", "urban1k"])
def test_retrieval_benchmarks_run(tmp_path: Path, tiny_model_dir: Path, bench: str) -> None:
    data = tmp_path / bench
    if bench == "coco":
        write_e5v(data, n_images=2, captions=5, column="caption")
        n_img, n_txt = 2, 10
    elif bench == "sharegpt4v":
        write_sharegpt4v(data, n=3)
        n_img, n_txt = 3, 3
    else:
        write_urban1k(data, n=3)
        n_img, n_txt = 3, 3
    res, out = _eval(tmp_path, tiny_model_dir, bench, data)
    assert res.exit_code == 0, res.output
    s = out["scores"]
    assert (s["images"], s["texts"]) == (n_img, n_txt)
    for d in ("t2i", "i2t"):
        assert set(s[d]) == {"R@1", "R@5", "R@10"} and s[d]["R@5"] == 100.0  # ≤ 5 candidates: always found
    if bench == "sharegpt4v":
        assert "uses the first 1000" in res.output  # the small file is flagged as not the published protocol


def test_sugarcrepe_end_to_end(tmp_path: Path, tiny_model_dir: Path, encoders) -> None:
    written = write_sugarcrepe(tmp_path / "sc", per_category=2)
    res, out = _eval(
        tmp_path, tiny_model_dir, "sugarcrepe", tmp_path / "sc", "--paper-row", "unime-llava-1.6-7b"
    )
    assert res.exit_code == 0, res.output
    cats = out["scores"]["categories"]
    enc = encoders["e5v"]
    for cat, items in written.items():
        recs = [items[k] for k in sorted(items, key=int)]
        img = enc.encode([Item(image=str(tmp_path / "sc" / "val2017" / r["filename"])) for r in recs])
        pos = enc.encode([Item(text=r["caption"]) for r in recs])
        neg = enc.encode([Item(text=r["negative_caption"]) for r in recs])
        expect = 100.0 * np.mean((img * pos).sum(1) > (img * neg).sum(1))
        assert cats[cat] == {"accuracy": pytest.approx(expect), "items": 2}
    g = out["scores"]["groups"]
    assert g["Swap"]["mean"] == pytest.approx(
        (cats["swap_obj"]["accuracy"] + cats["swap_att"]["accuracy"]) / 2
    )
    assert out["paper"]["groups"] == {"Replace": 89.0, "Swap": 71.5, "Add": 94.4}
    assert "paper: UniME LLaVA-1.6" in res.output


def test_mmeb_end_to_end(tmp_path: Path, tiny_model_dir: Path, encoders) -> None:
    root = tmp_path / "mmeb"
    rows = {
        "ImageNet-1K": mmeb_classification_rows("ImageNet-1K", n=4),
        "NIGHTS": mmeb_retrieval_rows("NIGHTS", n=3),
    }
    for name, r in rows.items():
        write_mmeb(root, name, r)
    res, out = _eval(tmp_path, tiny_model_dir, "mmeb", root, "--subsets", "ImageNet-1K,NIGHTS")
    assert res.exit_code == 0, res.output
    s = out["scores"]
    assert out["model"]["prompt_regime"] == "mmeb"
    # Unique pairs: 4 + 3 query images/texts, 3 class names + 3 candidate images.
    assert out["embedding"]["encoded"] == 4 + 3 + 3 + 3
    enc = encoders["mmeb"]

    def item(text: str, img: str) -> Item:
        return Item(text=text or None, image=str(root / "eval_images" / img) if img else None)

    for name, rs in rows.items():
        # Every row's query and candidates encoded as listed (no deduplication), in one batched call.
        flat = []
        for qt, qi, tts, tis in rs:
            flat += [item(qt, qi), *(item(t, i) for t, i in zip(tts, tis, strict=True))]
        vecs = enc.encode(flat, batch_size=8)
        correct, pos = 0, 0
        for _, _, tts, _ in rs:
            q, c = vecs[pos], vecs[pos + 1 : pos + 1 + len(tts)]
            correct += int(np.argmax(c @ q) == 0)
            pos += 1 + len(tts)
        assert s["datasets"][name]["precision@1"] == pytest.approx(100.0 * correct / len(rs))
    assert s["overall"] == pytest.approx(np.mean([v["precision@1"] for v in s["datasets"].values()]))
    assert s["n_datasets"] == 2 and not s["complete"]
    assert "Overall (datasets)" in res.output and "NIGHTS" in res.output


def test_missing_data_and_bad_arguments(tmp_path: Path, tiny_model_dir: Path) -> None:
    res, _ = _eval(tmp_path, tiny_model_dir, "urban1k", tmp_path / "absent")
    assert res.exit_code == 2 and "BeichenZhang/Urban1k" in res.output
    write_mmeb(tmp_path / "m", "ImageNet-1K", mmeb_classification_rows("ImageNet-1K", n=2))
    res, _ = _eval(tmp_path, tiny_model_dir, "mmeb", tmp_path / "m")  # all 36 asked, one present
    assert res.exit_code == 2 and "N24News" in res.output
    res, _ = _eval(tmp_path, tiny_model_dir, "imagenet", tmp_path)
    assert res.exit_code != 0 and "choose one of" in res.output
    res, _ = _eval(tmp_path, tiny_model_dir, "urban1k", tmp_path, "--subsets", "x")
    assert res.exit_code == 1 and "--subsets applies to sugarcrepe and mmeb" in res.output
    res, _ = _eval(tmp_path, tiny_model_dir, "urban1k", tmp_path, "--paper-row", "no-such-row")
    assert res.exit_code != 0 and "no paper row" in res.output


def test_mmeb_style_folder_with_its_own_dataset_table(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The scene generator's MMEB-style sets carry `datasets.json`; they are scored by its meta-tasks and never
    compared with the paper's MMEB numbers."""
    root = tmp_path / "gen"
    write_mmeb(root, "Scene_Cls", mmeb_classification_rows("Scene_Cls", n=3))
    write_mmeb(root, "Scene_t2i", mmeb_retrieval_rows("Scene_t2i", n=3))
    (root / "datasets.json").write_text(
        json.dumps(
            [
                {"name": "Scene_Cls", "meta_task": "Classification"},
                {"name": "Scene_t2i", "meta_task": "Retrieval"},
            ]
        )
    )
    res, out = _eval(tmp_path, tiny_model_dir, "mmeb", root, "--paper-row", "unime-llava-1.6-7b")
    assert res.exit_code == 0, res.output
    s = out["scores"]
    assert set(s["datasets"]) == {"Scene_Cls", "Scene_t2i"} and s["complete"] and not s["standard_table"]
    assert s["meta_tasks"]["Retrieval"] == s["datasets"]["Scene_t2i"]["precision@1"]
    assert out["paper"] is None and "MMEB-style (2 datasets" in res.output
