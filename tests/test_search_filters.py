"""--where: parser vs a brute-force Python predicate, and filtered search vs exact search over passing rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import one_faiss_thread
from tests.index_helpers import clustered_vectors, quiet, write_shard_dir
from uniretrieve.index.build import build_index
from uniretrieve.index.exact import exact_search, recall_at_k
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import ShardSource
from uniretrieve.search.filters import FilterError, WhereFilter
from uniretrieve.search.searcher import Searcher

N = 2400


def rows(n: int = N) -> dict[str, list]:
    rng = np.random.default_rng(3)
    mod = rng.choice(["image", "text", "image_text"], n).tolist()
    width = [int(w) if m != "text" else None for w, m in zip(rng.integers(10, 1000, n), mod, strict=True)]
    source = [f"photos/{2020 + i % 6}/{i}.jpg" if m != "text" else None for i, m in enumerate(mod)]
    meta = [
        json.dumps({"year": 2015 + i % 10, "tag": ["dog", "cat", "o'brien"][i % 3]}) if i % 7 else None
        for i in range(n)
    ]
    return {"modality": mod, "width": width, "source": source, "metadata": meta}


CASES = {
    "modality = 'image' and width > 100": lambda r: (
        r["modality"] == "image" and r["width"] is not None and r["width"] > 100
    ),
    "width > 512 and source like '%/2024/%'": lambda r: (
        r["width"] is not None and r["width"] > 512 and r["source"] is not None and "/2024/" in r["source"]
    ),
    "not (modality = 'text') or width <= 20": lambda r: r["modality"] != "text",
    "modality in ('text', 'image_text') and width is null": lambda r: r["modality"] == "text",
    "metadata.year >= 2022 and metadata.tag != 'dog'": lambda r: (
        r["meta"] is not None and r["meta"]["year"] >= 2022 and r["meta"]["tag"] != "dog"
    ),
    "metadata.tag = 'o''brien'": lambda r: r["meta"] is not None and r["meta"]["tag"] == "o'brien",
    "source not like 'photos/2021/%' AND width < 300": lambda r: (
        r["source"] is not None
        and not r["source"].startswith("photos/2021/")
        and r["width"] is not None
        and r["width"] < 300
    ),
}


@pytest.mark.parametrize("where", list(CASES))
def test_where_matches_brute_force_predicate(where: str) -> None:
    cols = rows()
    table = pa.table(cols)
    got = WhereFilter(where, table.column_names).mask(table)
    records = [
        {"modality": m, "width": w, "source": s, "meta": json.loads(x) if x else None}
        for m, w, s, x in zip(cols["modality"], cols["width"], cols["source"], cols["metadata"], strict=True)
    ]
    want = np.array([CASES[where](r) for r in records])
    assert want.any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("colour = 'red'", "unknown column 'colour'"),
        ("width >", "expected a column name or a value"),
        ("width > 5 and", "at position 13"),
        ("__import__('os')", "unknown column '__import__'"),
        ("__import__('os').system('x')", "cannot read --where at position 16"),
        ("width > 1; drop", "cannot read --where at position 9"),
        ("width like 5", "quoted pattern"),
    ],
)
def test_bad_expressions_are_refused_with_position(where: str, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        WhereFilter(where, ["id", "width", "modality", "metadata"])


@pytest.fixture(scope="module")
def filtered_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, pa.Table]:
    with one_faiss_thread():
        root = tmp_path_factory.mktemp("filt")
        x = clustered_vectors(N, 32, seed=31)
        cols = rows()
        shards = write_shard_dir(root / "shards", x, shard_rows=800, columns=cols)
        for t in ("flat", "ivf", "hnsw"):
            build_index(
                ShardSource(shards),
                root / t,
                BuildConfig(index_type=t, target_recall=0.95, tune_queries=100),
                log=quiet,
            )
        yield root, x, pa.table(cols)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize(
    "where", ["modality = 'image' and width > 100", "width > 990", "metadata.year = 2019"]
)
def test_filtered_search_returns_k_passing_hits(filtered_index, index_type: str, where: str) -> None:
    root, x, table = filtered_index
    allowed = WhereFilter(where, table.column_names).mask(table)
    s = Searcher.load(root / index_type)
    q = clustered_vectors(25, 32, seed=32)
    hits = s.search(vectors=q, k=10, where=where)
    want = min(10, int(allowed.sum()))
    found = np.array([[h.internal_id for h in r] + [-1] * (10 - len(r)) for r in hits])
    assert all(len(r) == want for r in hits)
    assert allowed[found[found >= 0]].all()
    gt_s, gt_i = exact_search([x], q, 20, allowed=allowed)
    rec = recall_at_k(found, gt_i, gt_s, 10)
    if index_type == "flat":
        assert rec == 1.0
        np.testing.assert_allclose([[h.score for h in r] for r in hits], gt_s[:, :want], atol=1e-5)
    else:
        assert rec >= 0.9


def test_filter_with_no_passing_rows_returns_nothing(filtered_index) -> None:
    root, _, _ = filtered_index
    assert Searcher.load(root / "flat").search(vectors=clustered_vectors(2, 32), where="width > 5000") == [
        [],
        [],
    ]


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_restricted_search_answers_when_over_fetching_finds_too_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index_type: str
) -> None:
    """Only the rows least like the queries pass, and over-fetching is capped at one round: every query is left
    short, so the restricted search over the passing ids must answer, exactly as exact search over them does."""
    from uniretrieve.search import filtered as filtered_mod

    n, k = 2000, 10
    x = clustered_vectors(n, 32, seed=51)
    rng = np.random.default_rng(52)
    q = x[:1] + 0.01 * rng.standard_normal((6, 32)).astype(np.float32)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    likeness = np.argsort(np.argsort(x @ q.mean(axis=0)))  # rank of each row, 0 = least like the queries
    shards = write_shard_dir(tmp_path / "shards", x, shard_rows=700, columns={"width": likeness.tolist()})
    build_index(
        ShardSource(shards),
        tmp_path / "idx",
        BuildConfig(index_type=index_type, target_recall=0.95, tune_queries=100),
        log=quiet,
    )
    monkeypatch.setattr(filtered_mod, "MAX_OVERFETCH", 1)
    s = Searcher.load(tmp_path / "idx")
    answered: list[int] = []
    restricted = s._restricted_search
    monkeypatch.setattr(
        s, "_restricted_search", lambda qq, kk, ids: answered.append(len(qq)) or restricted(qq, kk, ids)
    )

    hits = s.search(vectors=q, k=k, where="width < 100")

    assert answered == [len(q)]  # the first (and only) over-fetch round found too few for every query
    allowed = likeness < 100
    gt_s, gt_i = exact_search([x], q, k, allowed=allowed)
    np.testing.assert_array_equal([[h.internal_id for h in r] for r in hits], gt_i)
    np.testing.assert_allclose([[h.score for h in r] for r in hits], gt_s, atol=1e-5)
