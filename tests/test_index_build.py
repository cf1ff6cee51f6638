"""Index building: exact == brute force, ANN types reach their tuned recall, streaming == one-shot, save/load."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.index_helpers import clustered_vectors, quiet, random_vectors, write_shard_dir
from uniretrieve.index.build import IndexExistsError, build_index
from uniretrieve.index.exact import exact_search, recall_at_k
from uniretrieve.index.gpu import torch_topk_blocks
from uniretrieve.index.idmap import read_idmap
from uniretrieve.index.meta import BuildConfig, read_meta
from uniretrieve.index.source import ArraySource, ShardSource
from uniretrieve.index.store import version_dir
from uniretrieve.index.tune import set_param
from uniretrieve.search.searcher import Searcher

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


def test_exact_search_streams_blocks_like_one_matmul_with_ties() -> None:
    x = random_vectors(500, 16, seed=1)
    x[100:110] = x[5]  # a run of exact duplicates: ties must break by the smaller id
    q = np.concatenate([x[5:6], random_vectors(20, 16, seed=2)])
    s_ref, i_ref = brute_force(x, q, 30)
    s, i = exact_search((x[a : a + 37] for a in range(0, 500, 37)), q, 15)
    np.testing.assert_allclose(s, s_ref[:, :15], atol=1e-6)
    # ids agree up to ties (blocked matmuls round differently in the last bit)
    assert recall_at_k(i, i_ref, s_ref, 15) == 1.0
    assert recall_at_k(i[:, ::-1][:, :15] * 0 + np.arange(15, 30), i_ref, s_ref, 15) < 0.5
    assert i[0, :11].tolist() == [5, *range(100, 110)]


def test_torch_exact_equals_numpy_exact() -> None:
    x = random_vectors(700, 24, seed=3)
    q = random_vectors(9, 24, seed=4)
    s_np, i_np = exact_search([x[:300], x[300:]], q, 12, exclude=np.arange(9))
    s_t, i_t = torch_topk_blocks([x[:300], x[300:]], q, 12, device="cpu", exclude=np.arange(9))
    np.testing.assert_array_equal(i_t, i_np)
    np.testing.assert_allclose(s_t, s_np, atol=1e-5)
    # k larger than the corpus pads with -1 in both
    _, i_big = torch_topk_blocks([x[:5]], q, 8, device="cpu")
    assert (i_big[:, 5:] == -1).all()


def test_recall_counts_ties_past_rank_k() -> None:
    gt_ids = np.array([[0, 1, 2, 3]])
    gt_scores = np.array([[0.9, 0.8, 0.8, 0.1]], np.float32)
    assert recall_at_k(np.array([[0, 2]]), gt_ids, gt_scores, 2) == 1.0  # 2 ties with 1
    assert recall_at_k(np.array([[0, 3]]), gt_ids, gt_scores, 2) == 0.5


def test_flat_index_equals_brute_force(tmp_path: Path) -> None:
    x = random_vectors(1500, 32, seed=5)
    meta = build_index(
        ArraySource(x), tmp_path / "flat", BuildConfig(index_type="flat", tune_queries=50), log=quiet
    )
    assert meta.type == "flat" and meta.tuning["recall"] == 1.0
    index = faiss.read_index(str(version_dir(tmp_path / "flat") / "index.faiss"))
    q = random_vectors(30, 32, seed=6)
    s, i = index.search(q, 10)
    s_ref, _ = brute_force(x, q, 10)
    np.testing.assert_allclose(s, s_ref, atol=1e-5)
    # ids may differ only where scores tie
    np.testing.assert_allclose((q[:, None, :] * x[i]).sum(-1), s_ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize(("index_type", "target"), [("ivf", 0.95), ("hnsw", 0.95), ("ivfpq", 0.9)])
def test_ann_reaches_its_tuned_recall_on_fresh_queries(
    tmp_path: Path, index_type: str, target: float, kind: str
) -> None:
    """The tuner's recall claim holds on queries it never saw, against exact search on the same data."""
    make = random_vectors if kind == "random" else clustered_vectors
    d = 32
    x = make(3000, d, seed=7)
    config = BuildConfig(index_type=index_type, target_recall=target, tune_queries=200)
    meta = build_index(ArraySource(x), tmp_path / index_type, config, log=quiet)
    assert meta.tuning["reached"], meta.tuning
    assert meta.tuning["recall"] >= target
    assert meta.tuning["param"] == {"hnsw": "efSearch"}.get(index_type, "nprobe")
    # fresh queries: perturbed database points (near neighbours exist, as with real queries)
    rng = np.random.default_rng(99)
    q = x[rng.choice(3000, 200, replace=False)] + 0.3 * random_vectors(200, d, seed=8)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    searcher = Searcher.load(tmp_path / index_type)
    hits = searcher.search(vectors=q, k=10)
    found = np.array([[h.internal_id for h in row] for row in hits])
    gt_s, gt_i = exact_search([x], q, 20)
    assert recall_at_k(found, gt_i, gt_s, 10) >= target - 0.04


def test_tuning_on_cross_modal_query_shards(tmp_path: Path) -> None:
    x = clustered_vectors(2000, 32, seed=10)
    queries = write_shard_dir(tmp_path / "q", clustered_vectors(300, 32, seed=11), shard_rows=128)
    meta = build_index(
        ArraySource(x),
        tmp_path / "ivf",
        BuildConfig(index_type="ivf", target_recall=0.97),
        tune_source=ShardSource(queries),
        log=quiet,
    )
    assert meta.tuning["query_kind"].startswith("cross-modal") and meta.tuning["queries"] == 300
    assert meta.tuning["reached"] and meta.tuning["recall_lower"] >= 0.97
    assert meta.tuning["recall"] >= meta.tuning["recall_lower"]
    # the minimal parameter: one step less misses the target with confidence (else tuning would not be needed)
    smaller = [s for s in meta.tuning["sweep"] if s["value"] < meta.tuning["value"]]
    assert all(s["recall_lower"] < 0.97 for s in smaller)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
def test_streaming_build_equals_one_shot(tmp_path: Path, index_type: str) -> None:
    x = clustered_vectors(2500, 32, seed=12)
    small = BuildConfig(index_type=index_type, block_rows=333, tune_queries=50, target_recall=0.5)
    big = BuildConfig(index_type=index_type, block_rows=100_000, tune_queries=50, target_recall=0.5)
    build_index(ArraySource(x), tmp_path / "s", small, log=quiet)
    build_index(ArraySource(x), tmp_path / "b", big, log=quiet)
    a = faiss.read_index(str(version_dir(tmp_path / "s") / "index.faiss"))
    b = faiss.read_index(str(version_dir(tmp_path / "b") / "index.faiss"))
    assert a.ntotal == b.ntotal == 2500
    assert_same_contents(a, b, index_type)
    assert read_idmap(version_dir(tmp_path / "s") / "idmap.parquet").equals(
        read_idmap(version_dir(tmp_path / "b") / "idmap.parquet")
    )


def assert_same_contents(a: faiss.Index, b: faiss.Index, index_type: str) -> None:
    """Same stored vectors (flat, HNSW) or the same inverted lists, ids and codes (IVF, IVF-PQ)."""
    if index_type in ("flat", "hnsw"):
        np.testing.assert_array_equal(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal))
        return
    ia, ib = faiss.extract_index_ivf(a), faiss.extract_index_ivf(b)
    assert ia.nlist == ib.nlist
    for lst in range(ia.nlist):
        n = ia.invlists.list_size(lst)
        assert n == ib.invlists.list_size(lst)
        if n == 0:
            continue
        ids_a = faiss.rev_swig_ptr(ia.invlists.get_ids(lst), n).copy()
        ids_b = faiss.rev_swig_ptr(ib.invlists.get_ids(lst), n).copy()
        np.testing.assert_array_equal(ids_a, ids_b)
        cs = ia.invlists.code_size
        codes_a = faiss.rev_swig_ptr(ia.invlists.get_codes(lst), n * cs).copy()
        codes_b = faiss.rev_swig_ptr(ib.invlists.get_codes(lst), n * cs).copy()
        np.testing.assert_array_equal(codes_a, codes_b)


def test_saved_index_loads_and_answers_identically(tmp_path: Path) -> None:
    x = clustered_vectors(2000, 32, seed=13)
    shards = write_shard_dir(
        tmp_path / "shards", x, shard_rows=600, columns={"text": [f"t{i}" for i in range(2000)]}
    )
    build_index(
        ShardSource(shards), tmp_path / "idx", BuildConfig(index_type="ivf", target_recall=0.9), log=quiet
    )
    meta = read_meta(tmp_path / "idx")
    # in memory: the same steps without a save, parameters set as recorded
    q = clustered_vectors(40, 32, seed=14)
    fresh = faiss.read_index(str(version_dir(tmp_path / "idx") / "index.faiss"))
    set_param(fresh, "nprobe", meta.search_params["nprobe"])
    s_ref, i_ref = fresh.search(q, 10)
    hits = Searcher.load(tmp_path / "idx").search(vectors=q, k=10)
    np.testing.assert_array_equal([[h.internal_id for h in r] for r in hits], i_ref)
    np.testing.assert_allclose([[h.score for h in r] for r in hits], s_ref, rtol=1e-6)
    # the id map rows point at the shard row that holds the vector
    h = hits[0][0]
    assert h.id == str(h.internal_id) and h.text == f"t{h.internal_id}"
    assert h.shard.endswith(f"part-{h.internal_id // 600:06d}.parquet") and h.row == h.internal_id % 600
    assert meta.encoder["model_id"] == "test-model" and meta.model["dim"] == 32
    assert meta.sources[0]["manifest_hash"] == ShardSource(shards).fingerprint


def test_build_refuses_to_overwrite(tmp_path: Path) -> None:
    x = random_vectors(200, 8)
    build_index(ArraySource(x), tmp_path / "i", BuildConfig(index_type="flat", tune_queries=10), log=quiet)
    with pytest.raises(IndexExistsError, match="index add"):
        build_index(ArraySource(x), tmp_path / "i", BuildConfig(index_type="flat"), log=quiet)


@pytest.mark.gpu
def test_gpu_paths_equal_cpu_exact(tmp_path: Path) -> None:
    """On CUDA: torch exact search (fp16 database) and, with a FAISS GPU build, a GPU-built flat index agree with
    CPU exact search; k above the GPU limit of 2048 still works."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from uniretrieve.index.gpu import GPU_MAX_K, TorchExactIndex, faiss_gpu_count

    x = random_vectors(5000, 64, seed=40)
    q = random_vectors(20, 64, seed=41)
    gt_s, gt_i = exact_search([x], q, 2 * GPU_MAX_K + 100)
    _, i = TorchExactIndex(x, device="cuda").search(q, GPU_MAX_K + 50)
    assert recall_at_k(i, gt_i, gt_s, GPU_MAX_K + 50) > 0.99  # fp16 rounding may swap near-ties
    if faiss_gpu_count() > 0:
        meta = build_index(
            ArraySource(x), tmp_path / "g", BuildConfig(index_type="flat", gpu=True), log=quiet
        )
        assert meta.built_on == "gpu"
        hits = Searcher.load(tmp_path / "g", gpu=True).search(vectors=q, k=GPU_MAX_K + 1)
        found = np.array([[h.internal_id for h in r] for r in hits])
        assert recall_at_k(found, gt_i, gt_s, GPU_MAX_K + 1) > 0.99


def test_unreachable_latency_budget_is_reported_not_hidden(tmp_path: Path) -> None:
    x = clustered_vectors(2000, 32, seed=50)
    meta = build_index(
        ArraySource(x),
        tmp_path / "i",
        BuildConfig(index_type="ivf", target_recall=0.99, latency_ms=1e-6, tune_queries=50),
        log=quiet,
    )
    assert meta.tuning["reached"] is False and "not reached within" in meta.tuning["note"]
    assert meta.tuning["latency_budget_ms"] == 1e-6 and all("latency_ms" in s for s in meta.tuning["sweep"])


@pytest.mark.parametrize("factory", ["Flat", "SQfp16", "HNSW32,Flat", "HNSW32,SQfp16"])
def test_flat_code_stores_are_sized_once_not_regrown_per_block(factory: str) -> None:
    """Each regrowth of a vector store briefly holds two copies (up to 2× the index); one allocation avoids it."""
    from uniretrieve.index.build import reserve_rows

    def moves(reserve: bool) -> int:
        index = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
        store = faiss.downcast_index(index.storage) if "HNSW" in factory else index
        x = random_vectors(600, 16, seed=3)
        if reserve:
            reserve_rows(index, len(x))
        index.add(x[:1])
        where, moved = int(store.codes.data()), 0
        for a in range(1, 600, 50):
            index.add(x[a : a + 50])
            moved += int(store.codes.data()) != where
            where = int(store.codes.data())
        assert index.ntotal == 600 and store.codes.size() == 600 * store.code_size
        return moved

    assert moves(reserve=False) > 0  # what FAISS does by itself
    assert moves(reserve=True) == 0


def test_reserving_rows_changes_no_result(tmp_path: Path) -> None:
    from uniretrieve.index.build import reserve_rows

    x = random_vectors(300, 16, seed=4)
    plain, reserved = faiss.IndexFlatIP(16), faiss.IndexFlatIP(16)
    plain.add(x[:100])
    reserved.add(x[:100])
    reserve_rows(reserved, 200)  # as `index add` does on a loaded index
    plain.add(x[100:])
    reserved.add(x[100:])
    q = random_vectors(5, 16, seed=5)
    for a, b in zip(plain.search(q, 7), reserved.search(q, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    faiss.write_index(reserved, str(tmp_path / "r.faiss"))
    assert faiss.read_index(str(tmp_path / "r.faiss")).ntotal == 300


def test_training_sample_stays_within_the_memory_budget() -> None:
    """The float32 sample is the training phase's peak; it shrinks to fit --memory-budget, never below FAISS's 39
    points per list (nor 65,536 for PQ codebooks), and an explicit train_rows is taken as given."""
    from uniretrieve.index.build import train_rows
    from uniretrieve.index.factory import make_choice

    n, d = 1_000_000, 4096
    ivf = make_choice("ivf", n, d, nlist=4096, storage="fp16")
    assert (
        train_rows(ivf, n, d, BuildConfig(memory_budget=1 << 40)) == n
    )  # 256 per list > the corpus: all 16 GB
    assert train_rows(ivf, n, d, BuildConfig(memory_budget=8 << 30)) == (8 << 30) // (
        4 * d
    )  # 524,288 rows = 8 GiB
    assert train_rows(ivf, n, d, BuildConfig(memory_budget=1 << 30)) == 39 * 4096  # floor beats a tiny budget
    pq = make_choice("ivfpq", n, d, nlist=256, pq_m=64)
    assert train_rows(pq, n, d, BuildConfig(memory_budget=1 << 20)) == 65536
    assert train_rows(ivf, n, d, BuildConfig(memory_budget=1 << 20, train_rows=5000)) == 5000
    assert train_rows(ivf, 3000, d, BuildConfig(memory_budget=1 << 40)) == 3000  # never more than the corpus


def test_a_budget_capped_sample_still_trains_an_index_that_reaches_its_recall(tmp_path: Path) -> None:
    x = clustered_vectors(4000, 32, seed=6)
    lines: list[str] = []
    budget = 1200 * 4 * 32  # room for 1,200 float32 rows; IVF64 would take 4,000 (all of them)
    meta = build_index(
        ArraySource(x),
        tmp_path / "i",
        BuildConfig(index_type="ivf", nlist=64, memory_budget=budget),
        log=lines.append,
    )
    assert any("on 2496 sampled vectors" in s and "--memory-budget" in s for s in lines)  # 39 × 64 rows
    assert meta.tuning["reached"] and meta.num_vectors == 4000


def test_unreachable_target_takes_the_start_of_the_recall_plateau() -> None:
    """PQ codes cap recall below the target: the tuner used to take the value with the best lower bound (the
    largest nprobe, for the plateau's last 0.000x); now the smallest nprobe within 0.005 recall of the best."""
    import faiss

    from uniretrieve.index.tune import PLATEAU_TOLERANCE, make_tune_queries, tune

    x = clustered_vectors(6000, 32, seed=4)
    q = clustered_vectors(300, 32, seed=5)
    index = faiss.index_factory(32, "IVF64,PQ4x8", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    tq = make_tune_queries(lambda: iter([x]), q, 10, kind="test")
    r = tune(index, "ivfpq", tq, target=0.99, k=10, nlist=64)
    assert not r.reached and "chose nprobe" in r.note
    by_value = {s["value"]: s for s in r.sweep}
    best = max(by_value.values(), key=lambda s: (s["recall_lower"], -s["value"]))
    assert r.value < best["value"]  # the old rule's choice
    floor = max(best["recall_lower"], best["recall"] - PLATEAU_TOLERANCE)
    assert r.recall >= floor - 1e-4  # as good as the best, within the tolerance
    smaller = [s for v, s in by_value.items() if v < r.value]
    assert smaller and all(s["recall"] < floor for s in smaller)  # and nothing smaller is
