"""The hit store against the id map it is made from: every encoding (int, bool, fixed, dict, var; nulls; non-ASCII;
strings holding NUL), memory-mapped or in memory, gives the id map's values row for row; a version without a store
still searches; a damaged store is one clear error; `index verify` catches a store that disagrees; and a search
process answering with hits never imports pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.index_helpers import clustered_vectors, quiet
from uniretrieve.index.build import build_index
from uniretrieve.index.hitstore import (
    HITS_DIR,
    MANIFEST,
    HitStore,
    HitStoreError,
    encode_column,
    write_hit_store,
)
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import ArraySource
from uniretrieve.index.store import read_pointer
from uniretrieve.index.verify import verify_index
from uniretrieve.search.searcher import Searcher

N, D = 600, 16


def table(n: int = N) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "id": pa.array([f"doc-{i:05d}" for i in range(n)]),
            "shard": pa.array([f"/data/shard-{i // 100:03d}.parquet" for i in range(n)]),
            "row": pa.array(np.arange(n) % 100, pa.int64()),
            "text": pa.array(
                [None if i % 7 == 0 else "ünïcödé " * int(rng.integers(1, 30)) + str(i) for i in range(n)]
            ),
            "source": pa.array([f"a\x00b{i}" for i in range(n)]),  # NUL inside: never fixed-width
            "width": pa.array([None if i % 3 == 0 else int(i) for i in range(n)], pa.int32()),
            "modality": pa.array(["image" if i % 2 else "text" for i in range(n)]),
            "metadata": pa.array([None] * n, pa.string()),  # all null: not stored
            "deleted": pa.array(np.arange(n) % 50 == 0),
        }
    )


def test_every_encoding_gives_the_id_maps_values(tmp_path: Path) -> None:
    t = table()
    kinds = {
        name: encode_column(t.column(name)).kind for name in ("id", "shard", "row", "text", "source", "width")
    }
    assert kinds == {
        "id": "fixed",
        "shard": "dict",
        "row": "int",
        "text": "var",
        "source": "var",
        "width": "int",
    }
    write_hit_store(tmp_path, t)
    mapped = HitStore.open(tmp_path)
    memory = HitStore.from_table(t)
    assert mapped is not None and mapped.hit_columns == memory.hit_columns
    assert "metadata" not in mapped.hit_columns and mapped.idmap_columns == t.column_names
    for col in mapped.columns.values():  # file pages, not RAM; plain arrays, not np.memmap's slow __getitem__
        assert type(col.values) is np.ndarray and isinstance(col.values.base, np.memmap)
    np.testing.assert_array_equal(mapped.deleted, t.column("deleted").to_numpy())
    ids = np.random.default_rng(0).integers(0, N, 300)
    ids[:3] = [0, N - 1, 0]  # first, last, repeated
    for store in (mapped, memory):
        rows = store.take(ids, store.hit_columns)
        assert rows.num_rows == len(ids)
        for name in store.hit_columns:
            assert rows.column(name) == t.column(name).take(pa.array(ids)).to_pylist(), name
    assert mapped.take(np.zeros(0, np.int64), mapped.hit_columns).to_pylist() == []


def test_a_damaged_store_is_one_clear_error(tmp_path: Path) -> None:
    write_hit_store(tmp_path, table())
    man = tmp_path / HITS_DIR / MANIFEST
    spec = json.loads(man.read_text())
    spec["rows"] = N + 1
    man.write_text(json.dumps(spec))
    with pytest.raises(HitStoreError, match="rebuild the index"):
        HitStore.open(tmp_path)
    man.write_text("{not json")
    with pytest.raises(HitStoreError, match=f"{MANIFEST}.*rebuild the index"):
        HitStore.open(tmp_path)


@pytest.fixture
def built(tmp_path: Path) -> Path:
    x = clustered_vectors(N, D, seed=5)
    extra = {"text": [f"caption {i}" for i in range(N)], "width": list(range(N))}
    out = tmp_path / "idx"
    build_index(
        ArraySource(x, extra_columns=extra), out, BuildConfig(index_type="hnsw", gpu=False), log=quiet
    )
    return out


@pytest.mark.usefixtures("faiss_one_thread")
def test_a_version_without_a_store_searches_the_same(built: Path) -> None:
    q = clustered_vectors(5, D, seed=9)
    with Searcher.load(built) as s:
        before = s.search(vectors=q, k=7)
    version = read_pointer(built).path
    for p in sorted((version / HITS_DIR).iterdir()):
        p.unlink()
    (version / HITS_DIR).rmdir()
    with Searcher.load(built) as s:
        assert s.search(vectors=q, k=7) == before
    rep = verify_index(built)
    assert rep.ok and any("no hits/" in n for n in rep.notes)


@pytest.mark.usefixtures("faiss_one_thread")
def test_verify_catches_a_store_that_disagrees(built: Path) -> None:
    assert verify_index(built).ok
    version = read_pointer(built).path
    width = np.load(version / HITS_DIR / "width.npy")
    width[3] += 1
    np.save(version / HITS_DIR / "width.npy", width)
    rep = verify_index(built)
    assert not rep.ok and any("hits" in p and "does not match" in p for p in rep.problems)


def test_search_with_hits_imports_no_pyarrow(built: Path) -> None:
    code = f"""
import sys, numpy as np
from uniretrieve.search.searcher import Searcher
s = Searcher.load({str(built)!r})
t = s.search_arrays(np.ones((2, {D}), np.float32), k=5)
hits = t.hits()
assert t.rows.num_rows == 10 and hits[0][0].text.startswith("caption"), hits[0][0]
print("pyarrow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
