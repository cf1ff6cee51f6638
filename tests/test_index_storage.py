"""--storage fp16: flat, IVF and HNSW keep float16 vectors (FAISS SQfp16): half the bytes, search over exactly the
fp16-rounded vectors, filtered search intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.index_helpers import clustered_vectors, quiet, write_shard_dir
from uniretrieve.index.build import build_index
from uniretrieve.index.exact import exact_search, recall_at_k
from uniretrieve.index.factory import IndexChoiceError, choose_index, flat_bytes, make_choice
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import ArraySource, ShardSource
from uniretrieve.index.store import version_dir
from uniretrieve.search.searcher import Searcher

GB = 1 << 30
pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def test_fp16_factories_and_sizes() -> None:
    assert make_choice("flat", 1000, 64, storage="fp16").factory == "SQfp16"
    assert make_choice("hnsw", 1000, 64, storage="fp16").factory == "HNSW32,SQfp16"
    assert make_choice("ivf", 10_000, 64, nlist=64, storage="fp16").factory == "IVF64,SQfp16"
    assert flat_bytes(1000, 64, "fp16") * 2 == flat_bytes(1000, 64)
    # IVF-PQ stores codes whatever the storage
    assert (
        make_choice("ivfpq", 100_000, 64, pq_m=16, storage="fp16").factory
        == make_choice("ivfpq", 100_000, 64, pq_m=16).factory
    )
    with pytest.raises(IndexChoiceError, match="unknown vector storage"):
        make_choice("flat", 10, 8, storage="int4")
    with pytest.raises(ValueError, match="--storage"):
        BuildConfig(storage="bf16")


def test_auto_with_fp16_keeps_full_vectors_where_fp32_needs_pq() -> None:
    # 1M × 4096: 16 GiB as float32, 8 GiB as float16 (+ ids and centroids)
    assert choose_index(1_000_000, 4096, memory_budget=12 * GB).type == "ivfpq"
    c = choose_index(1_000_000, 4096, memory_budget=12 * GB, storage="fp16")
    assert c.type == "hnsw" and c.factory == "HNSW32,SQfp16" and c.expected_bytes <= 12 * GB
    g = choose_index(1_000_000, 4096, memory_budget=12 * GB, storage="fp16", gpu=True)
    assert g.type == "ivf" and g.factory.endswith(",SQfp16") and "fp16" in g.reason


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_fp16_index_searches_the_rounded_vectors(tmp_path: Path, index_type: str) -> None:
    x = clustered_vectors(3000, 32, seed=41)
    # fresh queries near database points, as real queries are (near neighbours exist)
    rng = np.random.default_rng(42)
    q = (
        x[rng.choice(len(x), 100, replace=False)]
        + 0.3 * rng.standard_normal((100, 32)).astype(np.float32) / 32**0.5
    )
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    cfg = dict(
        index_type=index_type, target_recall=0.95, tune_queries=200, nlist=32 if index_type == "ivf" else None
    )
    m32 = build_index(ArraySource(x), tmp_path / "fp32", BuildConfig(**cfg), log=quiet)
    m16 = build_index(ArraySource(x), tmp_path / "fp16", BuildConfig(**cfg, storage="fp16"), log=quiet)
    assert (
        m16.factory.endswith("SQfp16") and m16.config["storage"] == "fp16" and m32.config["storage"] == "fp32"
    )
    size32 = (version_dir(tmp_path / "fp32") / "index.faiss").stat().st_size
    size16 = (version_dir(tmp_path / "fp16") / "index.faiss").stat().st_size
    vec_bytes = 4 * x.size
    assert size32 - size16 == pytest.approx(vec_bytes / 2, rel=0.02)  # exactly the vectors' other half

    hits = Searcher.load(tmp_path / "fp16").search(vectors=q, k=10)
    found = np.array([[h.internal_id for h in r] for r in hits])
    scores = np.array([[h.score for h in r] for r in hits])
    rounded = x.astype(np.float16).astype(np.float32)
    gt_s, gt_i = exact_search([rounded], q, 20)
    if index_type == "flat":
        # an exhaustive scan of the fp16 vectors: exact search over the rounded database
        assert recall_at_k(found, gt_i, gt_s, 10) == 1.0
        # float32 sums in another order (FAISS's SIMD scan vs numpy) differ by ~1e-5; fp16 rounding is ~1e-3
        np.testing.assert_allclose(scores, gt_s[:, :10], atol=5e-5)
    else:
        assert m16.tuning["reached"] and recall_at_k(found, gt_i, gt_s, 10) >= 0.91
        # every returned score is the true inner product up to fp16 rounding (IVF stores fp16 residuals to its
        # centroid, which are finer still)
        np.testing.assert_allclose(scores, (q[:, None, :] * x[found]).sum(-1), atol=1e-3)
    # against float32 exact search, rounding alone costs next to nothing
    gt32_s, gt32_i = exact_search([x], q, 20)
    assert recall_at_k(found, gt32_i, gt32_s, 10) >= (0.99 if index_type == "flat" else 0.91)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_fp16_filtered_search(tmp_path: Path, index_type: str) -> None:
    n = 2000
    x = clustered_vectors(n, 32, seed=43)
    width = list(range(n))
    shards = write_shard_dir(tmp_path / "shards", x, shard_rows=700, columns={"width": width})
    build_index(
        ShardSource(shards),
        tmp_path / "idx",
        BuildConfig(index_type=index_type, storage="fp16", tune_queries=100),
        log=quiet,
    )
    q = clustered_vectors(20, 32, seed=44)
    hits = Searcher.load(tmp_path / "idx").search(vectors=q, k=10, where="width >= 1900")
    allowed = np.arange(n) >= 1900
    found = np.array([[h.internal_id for h in r] for r in hits])
    assert found.shape == (20, 10) and allowed[found].all()
    gt_s, gt_i = exact_search([x.astype(np.float16).astype(np.float32)], q, 20, allowed=allowed)
    assert recall_at_k(found, gt_i, gt_s, 10) >= 0.9
