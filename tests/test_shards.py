"""Shard files, manifest and reader: round trips, streaming blocks vs a full read, validation errors naming files,
and readability with plain pyarrow / duckdb."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uniretrieve.embed.manifest import (
    Manifest,
    SettingsMismatchError,
    ShardInfo,
    check_compatible,
    write_manifest,
)
from uniretrieve.embed.reader import ShardError, open_shards, read_shards
from uniretrieve.embed.schema import EmbeddingSpec, arrow_to_vectors, build_table, vectors_to_arrow
from uniretrieve.embed.writer import (
    ChunkResult,
    ShardWriter,
    shard_name,
    write_shard_file,
)
from uniretrieve.io import remove_stale_temps

DIM = 8


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_dir(root: Path, sizes: list[int], spec: EmbeddingSpec, seed: int = 0, rows_per_group: int = 3):
    """A shard directory written with the library's own writer pieces; returns (ids, float32 vectors)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    m = Manifest.new(spec)
    ids, vecs = [], []
    start = 0
    for k, n in enumerate(sizes):
        v = unit(rng, n)
        row_ids = [f"{root.name}-{start + i}" for i in range(n)]
        table = build_table(
            spec, {"id": row_ids, "embedding": v, "text": [f"t{start + i}" for i in range(n)]}
        )
        digest, size = write_shard_file(root / shard_name(k), table, rows_per_group)
        m.add_shard(ShardInfo(shard_name(k), n, start, start + n, digest, number=k, bytes=size))
        ids += row_ids
        vecs.append(v)
        start += n
    m.complete = True
    write_manifest(root, m)
    return ids, np.concatenate(vecs)


@pytest.fixture
def spec() -> EmbeddingSpec:
    return EmbeddingSpec(
        dim=DIM, dtype="float32", model_id="tiny", weight_hash="abc", family="llava", prompt_regime="e5v"
    )


def test_vectors_arrow_round_trip_and_slices() -> None:
    v = unit(np.random.default_rng(1), 10)
    arr = vectors_to_arrow(v, "float32")
    assert arr.type == pa.list_(pa.field("element", pa.float32()), DIM)
    np.testing.assert_array_equal(arrow_to_vectors(arr, DIM), v)
    np.testing.assert_array_equal(arrow_to_vectors(arr.slice(3, 4), DIM), v[3:7])  # offsets honoured
    half = arrow_to_vectors(vectors_to_arrow(v, "float16"), DIM)
    assert half.dtype == np.float32 and np.abs(half - v).max() < 1e-3


def test_build_table_refuses_nan_unknown_and_misaligned(spec: EmbeddingSpec) -> None:
    v = unit(np.random.default_rng(2), 3)
    bad = v.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"id 'b' \(row 1\) is not finite"):
        build_table(spec, {"id": ["a", "b", "c"], "embedding": bad})
    with pytest.raises(ValueError, match="unknown shard columns"):
        build_table(spec, {"id": ["a", "b", "c"], "embedding": v, "author": [1, 2, 3]})
    with pytest.raises(ValueError, match="'id' has 2 rows"):
        build_table(spec, {"id": ["a", "b"], "embedding": v})


def test_blocks_equal_full_read_across_shards(tmp_path: Path, spec: EmbeddingSpec) -> None:
    ids, vecs = make_dir(tmp_path / "d", [7, 0, 5, 9], spec)
    ss = open_shards(tmp_path / "d")
    assert (ss.num_rows, ss.dim, ss.dtype) == (21, DIM, "float32")
    got_ids, got = [], []
    for v, t in ss.iter_vector_blocks(block_rows=4, columns=("id",)):
        assert v.dtype == np.float32 and v.flags.c_contiguous and 0 < len(v) <= 4
        assert t.column_names == ["id"] and t.num_rows == len(v)
        got_ids += t.column("id").to_pylist()
        got.append(v)
    assert got_ids == ids
    np.testing.assert_array_equal(np.concatenate(got), vecs)
    # the streaming path equals a plain whole-file pyarrow read
    plain = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "d").glob("part-*.parquet")))
    assert plain.column("id").to_pylist() == ids
    np.testing.assert_array_equal(arrow_to_vectors(plain.column("embedding"), DIM), vecs)
    blocks = list(read_shards(tmp_path / "d", block_rows=6))
    assert [i for b, _ in blocks for i in b] == ids


def test_read_rows_any_order_matches_slow_path(tmp_path: Path, spec: EmbeddingSpec) -> None:
    ids, vecs = make_dir(tmp_path / "d", [7, 5, 9], spec)
    ss = open_shards(tmp_path / "d")
    want = [20, 0, 7, 7, 13, 6, 12]
    t = ss.read_rows(want, columns=("id", "text", "embedding"))
    assert t.column("id").to_pylist() == [ids[i] for i in want]
    assert t.column("text").to_pylist() == [f"t{i}" for i in want]
    np.testing.assert_array_equal(arrow_to_vectors(t.column("embedding"), DIM), vecs[want])
    np.testing.assert_array_equal(ss.read_vectors(want), vecs[want])
    assert ss.read_rows([], columns=("id",)).num_rows == 0
    with pytest.raises(IndexError, match="row 21 is out of range"):
        ss.read_rows([21])


def test_several_directories_same_settings_concatenate(tmp_path: Path, spec: EmbeddingSpec) -> None:
    a_ids, a = make_dir(tmp_path / "a", [4], spec, seed=1)
    b_ids, b = make_dir(tmp_path / "b", [3, 2], spec, seed=2)
    ss = open_shards([tmp_path / "a", tmp_path / "b"])
    assert ss.num_rows == 9
    np.testing.assert_array_equal(ss.read_vectors(range(9)), np.concatenate([a, b]))
    assert ss.read_rows([4, 3], ("id",)).column("id").to_pylist() == [b_ids[0], a_ids[3]]


def test_different_settings_refused_naming_the_setting(tmp_path: Path, spec: EmbeddingSpec) -> None:
    make_dir(tmp_path / "a", [3], spec)
    other = EmbeddingSpec(dim=DIM, dtype="float32", model_id="tiny", weight_hash="zzz", family="llava")
    make_dir(tmp_path / "b", [3], other)
    with pytest.raises(ShardError, match=r"weight_hash: 'abc' \(directory\) vs 'zzz'"):
        open_shards([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(SettingsMismatchError, match="--overwrite"):
        check_compatible(Manifest.new(spec), other, root=tmp_path / "a")


def test_missing_torn_and_foreign_shards_name_the_file(tmp_path: Path, spec: EmbeddingSpec) -> None:
    make_dir(tmp_path / "d", [3, 4], spec)
    with pytest.raises(ShardError, match=r"manifest.json not found"):
        open_shards(tmp_path)
    p = tmp_path / "d" / "part-000001.parquet"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"part-000001\.parquet has \d+ bytes but the manifest says"):
        open_shards(tmp_path / "d")
    p.unlink()
    with pytest.raises(ShardError, match=r"part-000001\.parquet listed in the manifest is missing"):
        open_shards(tmp_path / "d")
    # a shard written with other settings but a manifest saying otherwise
    other = EmbeddingSpec(dim=DIM, dtype="float32", model_id="other")
    t = build_table(other, {"id": ["x"], "embedding": unit(np.random.default_rng(0), 1)})
    digest, size = write_shard_file(p, t, 3)
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    m["shards"][1].update(rows=1, sha256=digest, bytes=size)
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match=r"part-000001\.parquet was written with settings"):
        open_shards(tmp_path / "d")


def test_verify_checksums_detects_same_size_damage(tmp_path: Path, spec: EmbeddingSpec) -> None:
    make_dir(tmp_path / "d", [5], spec)
    open_shards(tmp_path / "d", verify_checksums=True)
    p = tmp_path / "d" / "part-000000.parquet"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sha256"):
        open_shards(tmp_path / "d", verify_checksums=True)


def test_shards_read_with_plain_tools_and_carry_metadata(tmp_path: Path) -> None:
    spec16 = EmbeddingSpec(dim=DIM, model_id="tiny", weight_hash="abc", family="llava", prompt_regime="e5v")
    ids, _ = make_dir(tmp_path / "d", [3, 4], spec16)
    got = duckdb.sql(f"SELECT id FROM '{tmp_path / 'd'}/*.parquet' ORDER BY id").fetchall()
    assert sorted(i for (i,) in got) == sorted(ids)
    schema = pq.read_schema(tmp_path / "d" / "part-000000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.field("element", pa.float16()), DIM)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items() if k.startswith(b"uniretrieve.")}
    for key in (
        "model_id",
        "weight_hash",
        "family",
        "prompt_regime",
        "instruction",
        "dim",
        "dtype",
        "normalized",
    ):
        assert f"uniretrieve.{key}" in meta
    assert meta["uniretrieve.dtype"] == "float16" and meta["uniretrieve.dim"] == str(DIM)
    df = pq.read_table(tmp_path / "d" / "part-000001.parquet").to_pandas()
    assert list(df["id"]) == ids[3:]


def test_atomic_write_leaves_no_temp_and_stale_temps_are_removed(tmp_path: Path, spec: EmbeddingSpec) -> None:
    make_dir(tmp_path / "d", [3], spec)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["manifest.json", "part-000000.parquet"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs: its temp is stale
    host = socket.gethostname()
    torn = tmp_path / "d" / f".part-000001.parquet.tmp-{host}-{dead.pid}-1"
    torn.write_bytes(b"PAR1 half a shard")
    live = tmp_path / "d" / f".part-000002.parquet.tmp-{host}-{os.getpid()}-1"  # e.g. another rank, mid-write
    live.write_bytes(b"PAR1 being written")
    remote = (
        tmp_path / "d" / f".manifest.json.tmp-elsewhere-{dead.pid}-1"
    )  # another host's: its writer may live
    remote.write_bytes(b"{")
    assert remove_stale_temps(tmp_path / "d") == [torn]
    assert live.exists() and remote.exists()
    assert open_shards(tmp_path / "d").num_rows == 3


def test_background_writer_writes_in_order_and_surfaces_errors(tmp_path: Path, spec: EmbeddingSpec) -> None:
    committed: list[tuple[int, str | None, int]] = []
    threads: set[str] = set()

    def commit(result: ChunkResult, name: str | None, digest: str, size: int) -> None:
        threads.add(threading.current_thread().name)
        committed.append((result.chunk, name, result.rows))

    w = ShardWriter(tmp_path, spec, commit)
    rng = np.random.default_rng(3)
    for k in range(3):
        r = ChunkResult(0, k, k, 10 * k, 10 * k + 2)
        if k != 1:  # chunk 1 lost every row (all skipped): committed without a file
            r.add_rows([10 * k + 1, 10 * k], {"id": [f"b{k}", f"a{k}"]}, unit(rng, 2))
        w.submit(r)
    w.close()
    assert committed == [(0, "part-000000.parquet", 2), (1, None, 0), (2, "part-000002.parquet", 2)]
    assert threads == {"uniretrieve-shard-writer"}
    # rows are written in input order whatever order they were added in
    assert pq.read_table(tmp_path / "part-000002.parquet").column("id").to_pylist() == ["a2", "b2"]

    def failing(*_: object) -> None:
        raise OSError("disk full")

    w = ShardWriter(tmp_path, spec, failing)
    r = ChunkResult(0, 5, 5, 0, 1)
    r.add_rows([0], {"id": ["x"]}, unit(rng, 1))
    w.submit(r)
    with pytest.raises(RuntimeError, match="disk full"):
        w.close()


def test_append_shards_grows_a_cache_directory_by_segments(tmp_path: Path, spec: EmbeddingSpec) -> None:
    from uniretrieve.embed.commit import append_shards

    rng = np.random.default_rng(5)
    blocks = [{"id": [f"a{i}" for i in range(n)], "embedding": unit(rng, n)} for n in (3, 2)]
    m = append_shards(tmp_path, spec, iter(blocks), chunks=2, shard_rows=3, model={"m": 1})
    assert m.complete and m.total_rows == 5 and [s.path for s in m.shards] == [shard_name(0), shard_name(1)]
    assert m.segments[0].counts["encoded"] == 5 and m.model == {"m": 1}
    ss = open_shards(tmp_path, verify_checksums=True)
    vectors, table = ss.read_all(columns=("id",))
    assert table.column("id").to_pylist() == ["a0", "a1", "a2", "a0", "a1"]
    np.testing.assert_array_equal(vectors, np.concatenate([b["embedding"] for b in blocks]))

    def killed():  # the process computing the vectors dies after one block
        yield {"id": ["b0"], "embedding": unit(rng, 1)}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        append_shards(tmp_path, spec, killed(), chunks=3)
    assert (
        not open_shards(tmp_path).complete and open_shards(tmp_path).num_rows == 6
    )  # the finished shard stays
    m = append_shards(tmp_path, spec, [{"id": ["c0"], "embedding": unit(rng, 1)}], chunks=1)
    assert m.complete and m.segments[1].counts["abandoned"] and m.total_rows == 7
    assert [s.number for s in m.shards] == [0, 1, 2, 5]  # after the chunks the killed append had reserved

    with pytest.raises(SettingsMismatchError, match="other settings"):
        append_shards(tmp_path, EmbeddingSpec(dim=DIM, dtype="float32", model_id="other"), [], chunks=0)
    with pytest.raises(ValueError, match="2 announced"):
        append_shards(tmp_path, spec, [], chunks=2)
