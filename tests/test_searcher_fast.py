"""The fast search paths against the slow obvious versions: columnar hits (HitTable) vs one Hit per id-map row, the
BLAS matmul for few exact queries vs FAISS's flat scan, and the encode timer that must not include the model load."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import one_faiss_thread
from tests.index_helpers import clustered_vectors, quiet
from uniretrieve.index.build import build_index
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import ArraySource
from uniretrieve.search.flat import FlatMatmul
from uniretrieve.search.hits import Hit
from uniretrieve.search.searcher import Searcher

N, D = 2500, 32


def slow_hits(idmap: pa.Table, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Hits built one id-map row at a time, as dicts: the obvious version of HitTable.hits()."""
    out = []
    for q_scores, q_ids in zip(scores, ids, strict=True):
        hits = []
        for rank, (score, i) in enumerate(
            ((s, i) for s, i in zip(q_scores, q_ids, strict=True) if i >= 0), 1
        ):
            row = idmap.slice(int(i), 1).to_pylist()[0]
            meta = row.get("metadata")
            hits.append(
                Hit(
                    rank=rank,
                    score=float(score),
                    internal_id=int(row["internal_id"]),
                    id=row["id"],
                    modality=row.get("modality"),
                    text=row.get("text"),
                    source=row.get("source"),
                    instruction=row.get("instruction"),
                    group_id=row.get("group_id"),
                    width=row.get("width"),
                    height=row.get("height"),
                    shard=row.get("shard"),
                    row=row.get("row"),
                    metadata=json.loads(meta) if meta else None,
                )
            )
        out.append(hits)
    return out


def columns(n: int) -> dict[str, list[Any]]:
    rng = np.random.default_rng(4)
    mod = rng.choice(["image", "text"], n).tolist()
    return {
        "modality": mod,
        "text": [f"caption {i}" if m == "text" else None for i, m in enumerate(mod)],
        "width": [int(w) for w in rng.integers(1, 999, n)],
        "metadata": [json.dumps({"y": i % 9}) if i % 5 else None for i in range(n)],
    }


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("fast")
    x = clustered_vectors(N, D, seed=21)
    with one_faiss_thread():
        for t in ("flat", "ivf", "hnsw"):
            build_index(
                ArraySource(x, extra_columns=columns(N)),
                root / t,
                BuildConfig(index_type=t, gpu=False, tune_queries=100, target_recall=0.9),
                log=quiet,
            )
    return root, x


def queries(n: int, seed: int = 9) -> np.ndarray:
    return clustered_vectors(n, D, seed=seed)


def with_deleted(s: Searcher, dead: np.ndarray) -> Searcher:
    idmap = s.idmap.set_column(s.idmap.column_names.index("deleted"), "deleted", pa.array(dead))
    return Searcher(s.dir, s.meta, s.cpu_index, idmap)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
@pytest.mark.usefixtures("faiss_one_thread")
def test_hits_equal_the_row_by_row_version(indexes, index_type: str) -> None:
    """Plain, multi-query, single-query, filtered and deleted-rows searches: every Hit field as the slow version
    builds it from the same (scores, ids)."""
    root, _ = indexes
    s = Searcher.load(root / index_type)
    q = queries(30)
    dead = np.zeros(N, bool)
    dead[np.random.default_rng(1).choice(N, 300, replace=False)] = True
    d = with_deleted(s, dead)
    cases = [
        (s, q, 10, None),
        (s, q[:1], 7, None),
        (s, q, 10, "modality = 'text' and width > 300"),
        (s, q, 5, "metadata.y = 3"),
        (s, q[:3], 5, "width > 5000"),
        (d, q, 10, None),
        (d, q, 10, "modality = 'image'"),
    ]
    for searcher, qq, k, where in cases:
        table = searcher.search_arrays(qq, k=k, where=where)
        assert searcher.search(vectors=qq, k=k, where=where) == table.hits()
        assert table.hits() == slow_hits(searcher.idmap, table.scores, table.ids)
        assert table.rows.num_rows == int((table.ids >= 0).sum())
        if where is None and searcher is s:
            _, raw_i = searcher._raw_search(qq, k)
            np.testing.assert_array_equal(table.ids, raw_i)
    dead_hits = {h.internal_id for r in d.search(vectors=q, k=10) for h in r}
    assert not dead_hits & set(np.flatnonzero(dead).tolist())


@pytest.mark.parametrize("nq", [1, 3, 32])
@pytest.mark.parametrize("k", [1, 10, N + 5])
@pytest.mark.parametrize("blocks", ["one", "many"])
@pytest.mark.usefixtures("faiss_one_thread")
def test_flat_matmul_matches_faiss(nq: int, k: int, blocks: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    from uniretrieve.search import flat

    if blocks == "many":  # the database in blocks of 300 rows, merged top-k
        monkeypatch.setattr(flat, "MIN_BLOCK_ROWS", 300)
        monkeypatch.setattr(flat, "SCORE_FLOATS", 1)

    x = clustered_vectors(N, D, seed=3)
    x[100] = x[7]  # an exact tie: either order is right
    index = faiss.IndexFlatIP(D)
    index.add(x)
    mm = FlatMatmul.of(index)
    assert mm is not None and mm.faster(nq)
    q = queries(nq, seed=nq)
    fs, fi = index.search(q, k)
    ms, mi = mm.search(q, k)
    assert fs.shape == ms.shape == (nq, k)
    valid = fi >= 0
    np.testing.assert_array_equal(valid, mi >= 0)
    np.testing.assert_allclose(ms[valid], fs[valid], atol=1e-5)
    for r in range(nq):  # ids equal wherever the score is not tied with a neighbour's
        s = fs[r][valid[r]]
        untied = np.ones(len(s), bool)
        close = np.abs(np.diff(s)) < 1e-5
        untied[1:] &= ~close
        untied[:-1] &= ~close
        np.testing.assert_array_equal(mi[r][valid[r]][untied], fi[r][valid[r]][untied])


def test_matmul_only_for_float32_flat_and_few_queries() -> None:
    import faiss

    x = clustered_vectors(200, D)
    for factory in ("SQfp16", "HNSW8,Flat"):
        index = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.add(x)
        assert FlatMatmul.of(index) is None
    flat = faiss.IndexFlatIP(D)
    assert FlatMatmul.of(flat) is None  # empty
    flat.add(x)
    mm = FlatMatmul.of(flat)
    assert mm is not None and mm.faster(1) and not mm.faster(mm.max_queries + 1)


@pytest.mark.usefixtures("faiss_one_thread")
def test_searcher_single_query_flat_equals_faiss(indexes) -> None:
    root, _ = indexes
    s = Searcher.load(root / "flat")
    assert s.flat_matmul is not None
    for v in queries(5):
        hits = s.search_vectors(v[None], k=10)[0]
        fs, fi = s.cpu_index.search(v[None], 10)
        assert [h.internal_id for h in hits] == fi[0].tolist()
        np.testing.assert_allclose([h.score for h in hits], fs[0], atol=1e-5)


class SlowLoadingEncoder:
    """Takes `load_s` to load and no time to encode."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @classmethod
    def from_pretrained(cls, name: str, **_: Any) -> SlowLoadingEncoder:
        time.sleep(0.3)
        return cls(D)

    def describe(self) -> dict[str, Any]:
        return {"model_id": "test-model", "dim": self.dim}

    def encode(self, items: list[Any]) -> np.ndarray:
        return queries(len(items))


def test_encode_timer_excludes_the_model_load(indexes, monkeypatch: pytest.MonkeyPatch) -> None:
    import uniretrieve.models.encoder as encoder_mod

    root, _ = indexes
    monkeypatch.setattr(encoder_mod, "Encoder", SlowLoadingEncoder)
    s = Searcher.load(root / "flat", model="test-model")
    s.meta.model["model_id"] = "test-model"
    hits = s.search(texts=["a query"], k=3)
    assert len(hits[0]) == 3
    assert s.timings["model_load"] >= 0.3
    assert s.timings["encode"] < 0.25  # before the fix the load's 0.3 s was counted here too


def test_model_dtype_reaches_the_query_model(indexes, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Searcher.load(model_dtype=...)` (serve's --model-dtype) is the dtype the query model loads in."""
    import uniretrieve.models.encoder as encoder_mod

    seen: dict[str, Any] = {}

    class Recording(SlowLoadingEncoder):
        @classmethod
        def from_pretrained(cls, name: str, **kw: Any) -> Any:
            seen.update(kw)
            return cls(D)

    root, _ = indexes
    monkeypatch.setattr(encoder_mod, "Encoder", Recording)
    s = Searcher.load(root / "flat", model="test-model", model_dtype="bfloat16")
    s.meta.model["model_id"] = "test-model"
    s.search(texts=["a query"], k=1)
    assert seen["dtype"] == "bfloat16"
