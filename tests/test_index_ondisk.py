"""`index build --on-disk`: IVF lists in memory-mapped files, filled in parallel, appended to by `index add` through
hard-linked parts; every search equals the same lists held in RAM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.index_helpers import clustered_vectors, quiet, write_shard_dir
from uniretrieve.cli.app import app
from uniretrieve.index import ondisk
from uniretrieve.index.add import add_to_index
from uniretrieve.index.build import build_index
from uniretrieve.index.meta import BuildConfig, read_meta
from uniretrieve.index.ondisk import part_names, read_version_index
from uniretrieve.index.source import ArraySource, ShardSource
from uniretrieve.index.store import version_dir
from uniretrieve.index.verify import verify_index
from uniretrieve.search.searcher import Searcher

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("faiss_one_thread")


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(4000, 32, seed=5)


def _config(**kw: object) -> BuildConfig:
    return BuildConfig(on_disk=True, nlist=32, tune_queries=200, **kw)  # type: ignore[arg-type]


def _in_ram(trained: Path, x: np.ndarray, nprobe: int) -> faiss.Index:
    """The slow obvious version: the same trained index with every vector added in RAM."""
    index = faiss.read_index(str(trained))
    index.add(x)
    index.nprobe = nprobe
    return index


def _search(index: faiss.Index, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return index.search(np.ascontiguousarray(q, dtype=np.float32), k)


@pytest.mark.parametrize("index_type", ["auto", "ivfpq"])
def test_on_disk_build_equals_lists_in_ram(tmp_path: Path, vectors: np.ndarray, index_type: str) -> None:
    src = write_shard_dir(tmp_path / "s", vectors, shard_rows=900)
    kw = {"pq_m": 8} if index_type == "ivfpq" else {}
    meta = build_index(ShardSource(src), tmp_path / "i", _config(index_type=index_type, **kw), log=quiet)
    v = version_dir(tmp_path / "i")
    assert meta.choice["on_disk"] and meta.num_vectors == 4000
    assert (v / "lists-000001.ivfdata").stat().st_size > 0 and part_names(v) == ["lists-000001"]
    assert faiss.read_index(str(v / "index.faiss")).ntotal == 0  # the trained index alone: small
    disk = read_version_index(v)
    nprobe = int(meta.search_params["nprobe"])
    faiss.extract_index_ivf(disk).nprobe = nprobe
    q = clustered_vectors(50, 32, seed=99)
    d1, i1 = _search(disk, q)
    d2, i2 = _search(_in_ram(v / "index.faiss", vectors, nprobe), q)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    assert index_type == "ivfpq" or meta.tuning["recall"] >= 0.9  # PQ codes of 8 bytes cap the recall


def test_parallel_fill_equals_one_process(tmp_path: Path, vectors: np.ndarray, monkeypatch) -> None:
    monkeypatch.setattr(ondisk, "RANGE_ROWS", 700)  # several ranges per worker
    src = ArraySource(vectors)
    build_index(src, tmp_path / "one", _config(), log=quiet)
    build_index(src, tmp_path / "two", _config(workers=2), log=quiet)
    a, b = (
        read_version_index(version_dir(tmp_path / "one")),
        read_version_index(version_dir(tmp_path / "two")),
    )
    for ix in (a, b):
        faiss.extract_index_ivf(ix).nprobe = 32
    ia, ib = faiss.extract_index_ivf(a).invlists, faiss.extract_index_ivf(b).invlists
    for lst in range(32):  # the same ids in the same order in every list
        assert ia.list_size(lst) == ib.list_size(lst)
        n = ia.list_size(lst)
        ids_a = faiss.rev_swig_ptr(ia.get_ids(lst), n).copy()
        ids_b = faiss.rev_swig_ptr(ib.get_ids(lst), n).copy()
        np.testing.assert_array_equal(ids_a, ids_b)
    assert not list(version_dir(tmp_path / "two").glob(".lists-*"))  # range files removed


def test_add_appends_a_linked_part(tmp_path: Path, vectors: np.ndarray) -> None:
    a = write_shard_dir(tmp_path / "a", vectors[:3000], shard_rows=1000)
    b = write_shard_dir(tmp_path / "b", vectors[3000:], shard_rows=1000, id_prefix="b")
    build_index(ShardSource(a), tmp_path / "i", _config(), log=quiet)
    v1 = version_dir(tmp_path / "i")
    reader = Searcher.load(tmp_path / "i")  # holds v1 while the add runs
    q = clustered_vectors(40, 32, seed=7)
    before = reader.search(vectors=q, k=5)
    meta = add_to_index(tmp_path / "i", ShardSource(b), all_vectors=ShardSource([a, b]), log=quiet)
    v2 = version_dir(tmp_path / "i")
    assert v2 != v1 and part_names(v2) == ["lists-000001", "lists-000002"] and meta.num_vectors == 4000
    # the old part is the same file (a hard link), not a copy; the new part holds only the added vectors
    assert os.stat(v1 / "lists-000001.ivfdata").st_ino == os.stat(v2 / "lists-000001.ivfdata").st_ino
    assert faiss.read_index(str(v2 / "lists-000002.faiss")).ntotal == 1000
    assert [[h.id for h in hs] for hs in reader.search(vectors=q, k=5)] == [
        [h.id for h in hs] for hs in before
    ]
    reader.close()
    with Searcher.load(tmp_path / "i") as s:
        nprobe = int(s.meta.search_params["nprobe"])
        got = s.search(vectors=q, k=10)
    _d2, i2 = _search(_in_ram(v2 / "index.faiss", vectors, nprobe), q)
    ids = np.array([f"b{i - 3000}" if i >= 3000 else str(i) for i in i2.ravel()]).reshape(i2.shape)
    assert [[h.id for h in hs] for hs in got] == ids.tolist()
    assert verify_index(tmp_path / "i").ok


def test_many_adds_merge_parts(tmp_path: Path, vectors: np.ndarray, monkeypatch) -> None:
    monkeypatch.setattr("uniretrieve.index.ondisk_build.MAX_PARTS", 3)
    build_index(ArraySource(vectors[:2000]), tmp_path / "i", _config(), log=quiet)
    lines: list[str] = []
    for k, s in enumerate(range(2000, 4000, 500)):
        ids = [str(i) for i in range(s, s + 500)]
        add_to_index(tmp_path / "i", ArraySource(vectors[s : s + 500], ids=ids), log=lines.append)
        assert len(part_names(version_dir(tmp_path / "i"))) == (k + 2 if k < 2 else k - 1)
    assert any("merged 4 list parts" in line for line in lines)
    v = version_dir(tmp_path / "i")
    index = read_version_index(v)
    assert index.ntotal == 4000
    _d1, i1 = _search(_set_nprobe(index, 32), vectors[:20])
    _d2, i2 = _search(_in_ram(v / "index.faiss", vectors, 32), vectors[:20])
    np.testing.assert_array_equal(i1, i2)


def _set_nprobe(index: faiss.Index, nprobe: int) -> faiss.Index:
    faiss.extract_index_ivf(index).nprobe = nprobe
    return index


def test_filtered_search_on_disk(tmp_path: Path, vectors: np.ndarray) -> None:
    texts = [f"t{i % 3}" for i in range(4000)]
    a = write_shard_dir(tmp_path / "a", vectors, shard_rows=2000, columns={"text": texts})
    build_index(ShardSource(a), tmp_path / "i", _config(), log=quiet)
    with Searcher.load(tmp_path / "i") as s:
        hits = s.search(vectors=vectors[:5], k=10, where="text = 't1'")
    assert all(h.text == "t1" for hs in hits for h in hs) and all(hs for hs in hits)


def test_verify_names_a_missing_list_file(tmp_path: Path, vectors: np.ndarray) -> None:
    build_index(ArraySource(vectors), tmp_path / "i", _config(), log=quiet)
    v = version_dir(tmp_path / "i")
    (v / "lists-000001.ivfdata").unlink()
    report = verify_index(tmp_path / "i")
    assert not report.ok and any("lists-000001" in p or "index.faiss" in p for p in report.problems)


def test_cli_on_disk_build_and_search(tmp_path: Path, vectors: np.ndarray) -> None:
    src = write_shard_dir(tmp_path / "s", vectors, shard_rows=2000)
    r = runner.invoke(
        app, ["index", "build", str(src), "-o", str(tmp_path / "i"), "--on-disk", "--nlist", "32"]
    )
    assert r.exit_code == 0, r.output
    assert "lists on disk" in r.output and "resizing" not in r.output
    info = json.loads((version_dir(tmp_path / "i") / "index.json").read_text())
    assert info["config"]["on_disk"] is True
    r = runner.invoke(
        app, ["index", "build", str(src), "-o", str(tmp_path / "j"), "--on-disk", "--type", "hnsw"]
    )
    assert r.exit_code == 2 and "--on-disk" in r.output and len(r.output.strip().splitlines()) == 1
    assert read_meta(tmp_path / "i").num_vectors == 4000
