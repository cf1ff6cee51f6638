"""Shards → Milvus, checked against milvus-lite (a local `.db` file): every id, vector and column comes back exactly,
search agrees with exact inner product, reruns add nothing, mismatched collections are refused in one line, the
index types milvus-lite builds, the bulk-import Parquet files, and the CLI (docs/milvus.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.index_helpers import quiet, random_vectors, write_shard_dir
from uniretrieve.cli.app import app
from uniretrieve.embed.reader import open_shards
from uniretrieve.index.milvus import (
    LITE_BUILDS,
    MilvusConfig,
    MilvusExportError,
    export_to_milvus,
    write_import_files,
)

runner = CliRunner()
N, D = 600, 32
COLUMNS = (
    "modality",
    "text",
    "instruction",
    "source",
    "group_id",
    "content_hash",
    "width",
    "height",
    "metadata",
)


def corpus_columns(n: int) -> dict[str, list[Any]]:
    """Every shard column, with nulls, non-ASCII text and JSON metadata in some rows."""
    return {
        "modality": [("text", "image", "image_text")[i % 3] for i in range(n)],
        "text": [None if i % 3 == 1 else f"caption {i} — ünïcödé “quoted”" for i in range(n)],
        "instruction": [None if i % 2 else "Represent the image" for i in range(n)],
        "source": [f"pics/{i}.png" for i in range(n)],
        "group_id": [None if i % 4 else f"g{i // 4}" for i in range(n)],
        "content_hash": [f"{i:064x}" for i in range(n)],
        "width": [None if i % 3 == 0 else 40 + i for i in range(n)],
        "height": [None if i % 3 == 0 else 30 + i for i in range(n)],
        "metadata": [None if i % 5 == 0 else json.dumps({"n": i, "tags": ["a", str(i)]}) for i in range(n)],
    }


def hostile_ids(n: int) -> list[str]:
    """Paths with quotes, backslashes, tabs and spaces: the per-block existence query must quote them right."""
    return [f'dir {i}/it\'s "{i}"\\\t.png' if i % 7 == 0 else f"photos/{i:05d}.jpg" for i in range(n)]


def make_shards(root: Path, n: int = N, d: int = D, seed: int = 0, **kw: Any) -> Path:
    path = write_shard_dir(root, random_vectors(n, d, seed), shard_rows=250, columns=corpus_columns(n), **kw)
    _rename_ids(path, hostile_ids(n))
    return path


def _rename_ids(root: Path, ids: list[str]) -> None:
    """Put `ids` into the shards (write_shard_dir numbers them), keeping the manifest's sizes and hashes right."""
    from uniretrieve.embed.manifest import read_manifest, write_manifest
    from uniretrieve.embed.writer import write_shard_file

    man = read_manifest(root)
    for info in man.shards:
        t = pq.read_table(root / info.path)
        t = t.set_column(0, t.schema.field("id"), pa.array(ids[info.input_start : info.input_end]))
        info.sha256, info.bytes = write_shard_file(root / info.path, t, 1024)
    write_manifest(root, man)


def all_rows(client: Any, collection: str) -> dict[str, dict[str, Any]]:
    it = client.query_iterator(collection, batch_size=500, output_fields=["*"])
    out: dict[str, dict[str, Any]] = {}
    while batch := it.next():
        out.update({r["id"]: r for r in batch})
    it.close()
    return out


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One milvus-lite database for the module (its start-up and each collection's index build cost seconds)."""
    pytest.importorskip("milvus_lite")
    MilvusClient = pytest.importorskip("pymilvus").MilvusClient
    root = tmp_path_factory.mktemp("milvus")
    shards = make_shards(root / "shards", dtype="float16")  # Milvus must hold their float32 values exactly
    db = str(root / "lite.db")
    lines: list[str] = []
    res = export_to_milvus(
        shards, db, "docs", MilvusConfig(index_type="FLAT", block_rows=256), log=lines.append
    )
    return {"root": root, "shards": shards, "db": db, "client": MilvusClient(db), "result": res, "log": lines}


def test_every_row_comes_back_exactly(lite: dict[str, Any]) -> None:
    vectors, table = open_shards(lite["shards"]).read_all(columns=("id", *COLUMNS))
    got = all_rows(lite["client"], "docs")
    ids = table.column("id").to_pylist()
    assert sorted(got) == sorted(ids) and len(got) == N
    back = np.stack([np.asarray(got[i]["embedding"], dtype=np.float32) for i in ids])
    assert back.dtype == np.float32 and np.array_equal(back, vectors)  # bit for bit, not approximately
    for name in COLUMNS:
        want = table.column(name).to_pylist()
        have = [got[i][name] for i in ids]
        if name == "metadata":  # a JSON field: Milvus gives the object back
            want = [None if w is None else json.loads(w) for w in want]
        assert have == want, name
    assert lite["result"].written == N and lite["result"].skipped == 0
    assert "rows/s" in lite["log"][-1]


def test_search_returns_the_exact_top_k(lite: dict[str, Any]) -> None:
    vectors, table = open_shards(lite["shards"]).read_all(columns=("id",))
    ids = np.array(table.column("id").to_pylist(), dtype=object)
    queries = random_vectors(12, D, seed=7)
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    hits = lite["client"].search("docs", data=queries.tolist(), limit=10, anns_field="embedding")
    for q, row in enumerate(hits):
        assert [h["id"] for h in row] == list(ids[exact[q]])
        np.testing.assert_allclose(
            [h["distance"] for h in row], (queries[q] @ vectors.T)[exact[q]], rtol=1e-5
        )


def test_the_collection_says_which_model_made_its_vectors(lite: dict[str, Any]) -> None:
    ss = open_shards(lite["shards"])
    desc = lite["client"].describe_collection("docs")
    props = desc["properties"]
    assert props["uniretrieve.settings_hash"] == ss.spec.settings_hash()
    assert json.loads(props["uniretrieve.settings"])["model_id"] == "test-model"
    assert json.loads(props["uniretrieve.model"]) == ss.manifest.model and props["uniretrieve.metric"] == "ip"
    assert {f["name"]: f.get("nullable", False) for f in desc["fields"]} == {
        "id": False,
        "embedding": False,
        **dict.fromkeys(COLUMNS, True),
    }
    (name,) = lite["client"].list_indexes("docs", field_name="embedding")
    index = lite["client"].describe_index("docs", name)
    assert (index["index_type"], index["metric_type"]) == ("FLAT", "IP")


def test_a_rerun_skips_what_is_there_and_replaces_what_changed(lite: dict[str, Any]) -> None:
    client, db = lite["client"], lite["db"]
    shards = make_shards(lite["root"] / "again")
    cfg = MilvusConfig(index_type="FLAT", block_rows=200)
    first = export_to_milvus(shards, db, "rerun", cfg, log=quiet)
    again = export_to_milvus(shards, db, "rerun", cfg, log=quiet)
    assert (first.written, again.written, again.skipped) == (N, 0, N)
    # an incremental encode re-encodes a changed item into a later directory (same settings): the later row wins
    changed = write_shard_dir(lite["root"] / "changed", random_vectors(2, D, seed=99), id_prefix="x")
    _rename_ids(changed, [hostile_ids(N)[0], "brand new"])
    res = export_to_milvus([shards, changed], db, "rerun", cfg, log=quiet)
    assert (res.written, res.skipped, res.rows) == (2, N - 1, N + 1)
    rows = all_rows(client, "rerun")
    assert len(rows) == N + 1
    new = open_shards(changed).read_vectors([0, 1])
    assert np.array_equal(np.asarray(rows[hostile_ids(N)[0]]["embedding"], dtype=np.float32), new[0])
    assert rows["brand new"]["text"] is None and rows[hostile_ids(N)[0]]["content_hash"] is None
    # bulk-import files of both directories: distinct names, the superseded row left out
    files = write_import_files([shards, changed], lite["root"] / "import2")
    assert [Path(f).name for f in files] == [
        f"{d}-part-{k:06d}.parquet" for d, k in ((0, 0), (0, 1), (0, 2), (1, 0))
    ]
    ids = pa.concat_tables([pq.read_table(f, columns=["id"]) for f in files]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == N + 1


def test_a_collection_of_another_dim_or_model_is_refused_in_one_line(lite: dict[str, Any]) -> None:
    other_dim = write_shard_dir(lite["root"] / "d16", random_vectors(20, 16))
    with pytest.raises(MilvusExportError) as exc:
        export_to_milvus(other_dim, lite["db"], "docs", MilvusConfig(index_type="FLAT"), log=quiet)
    msg = str(exc.value)
    assert "\n" not in msg and "dim 32" in msg and "dim 16" in msg and "--overwrite" in msg
    other_model = write_shard_dir(lite["root"] / "m2", random_vectors(20, D), model_id="another-model")
    with pytest.raises(MilvusExportError, match="records settings"):
        export_to_milvus(other_model, lite["db"], "docs", MilvusConfig(index_type="FLAT"), log=quiet)
    assert lite["client"].query("docs", filter="", output_fields=["count(*)"])[0]["count(*)"] == N
    # --overwrite drops and recreates it, here in a scratch collection
    export_to_milvus(other_model, lite["db"], "scratch", MilvusConfig(index_type="FLAT"), log=quiet)
    export_to_milvus(
        other_dim, lite["db"], "scratch", MilvusConfig(index_type="FLAT"), overwrite=True, log=quiet
    )
    desc = lite["client"].describe_collection("scratch")
    assert next(f for f in desc["fields"] if f["name"] == "embedding")["params"]["dim"] == 16


def test_an_id_longer_than_milvus_holds_is_refused_before_anything_is_written(lite: dict[str, Any]) -> None:
    root = write_shard_dir(lite["root"] / "long", random_vectors(3, D))
    _rename_ids(root, ["a", "b" * 70000, "c"])
    with pytest.raises(MilvusExportError) as exc:
        export_to_milvus(root, lite["db"], "long", MilvusConfig(index_type="FLAT"), log=quiet)
    msg = str(exc.value)
    assert "\n" not in msg and "'bbbb" in msg and "70000 bytes" in msg and "65535" in msg and len(msg) < 400
    assert not lite["client"].has_collection("long")


@pytest.mark.parametrize("index_type", [t for t in LITE_BUILDS if t != "FLAT"])
def test_each_index_type_milvus_lite_builds(lite: dict[str, Any], index_type: str) -> None:
    root = lite["root"] / "types"
    if not root.exists():
        write_shard_dir(root, random_vectors(300, D, seed=3))
    name = f"t_{index_type.lower()}"
    params = {"nlist": 8} if index_type.startswith("IVF") else {}
    export_to_milvus(
        root, lite["db"], name, MilvusConfig(index_type=index_type, index_params=params), log=quiet
    )
    # milvus-lite 3.2 keeps one index file per segment and type: the index was really built
    assert list((Path(lite["db"]) / "collections" / name).rglob(f"*.embedding.{index_type.lower()}.idx"))
    vectors = open_shards(root).read_all()[0]
    queries = vectors[:20]
    hits = lite["client"].search(
        name, data=queries.tolist(), limit=5, search_params={"params": {"nprobe": 8}}
    )
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    recall = np.mean([len({int(h["id"]) for h in row} & set(exact[q])) / 5 for q, row in enumerate(hits)])
    assert recall >= 0.9, (index_type, recall)


@pytest.mark.parametrize("index_type", ["IVF_PQ", "DISKANN", "SCANN", "GPU_CAGRA", "HNSW_PQ", "NO_SUCH"])
def test_an_index_type_milvus_lite_only_pretends_to_build_is_refused(
    lite: dict[str, Any], index_type: str
) -> None:
    with pytest.raises(MilvusExportError, match=f"milvus-lite does not build {index_type}"):
        export_to_milvus(lite["shards"], lite["db"], "never", MilvusConfig(index_type=index_type), log=quiet)


def test_bulk_import_files_fit_the_collection(lite: dict[str, Any]) -> None:
    out = lite["root"] / "import"
    res = export_to_milvus(
        lite["shards"], lite["db"], "imported", MilvusConfig(index_type="FLAT"), import_files=out, log=quiet
    )
    assert [Path(f).name for f in res.files] == [
        f"{s.path.stem}.parquet" for s in open_shards(lite["shards"]).shards
    ]
    t = pa.concat_tables([pq.read_table(f) for f in res.files])
    # the column types of pymilvus's own writer (pymilvus.bulk_writer.constants.ARROW_TYPE_CREATOR)
    types = {
        "id": pa.string(),
        "embedding": pa.list_(pa.float32()),
        "width": pa.int32(),
        "height": pa.int32(),
    }
    assert t.schema.names == ["id", "embedding", *COLUMNS]
    assert all(f.type == types.get(f.name, pa.string()) for f in t.schema)
    vectors, table = open_shards(lite["shards"]).read_all(columns=("id", *COLUMNS))
    assert np.array_equal(np.array(t.column("embedding").to_pylist(), dtype=np.float32), vectors)
    assert t.drop_columns(["embedding"]).equals(table)
    # milvus-lite has no bulk import: insert the files' rows instead, to show they fit the collection made for them
    client = lite["client"]
    assert client.query("imported", filter="", output_fields=["count(*)"])[0]["count(*)"] == 0
    client.insert("imported", t.to_pylist())
    assert len(all_rows(client, "imported")) == N
    with pytest.raises(MilvusExportError, match="already holds"):
        write_import_files(lite["shards"], out)


def _one_error_line(res: Any) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    return lines[0]


def test_cli(lite: dict[str, Any]) -> None:
    base = ["index", "export-milvus", str(lite["shards"]), "--uri", lite["db"]]
    res = runner.invoke(app, [*base, "--collection", "cli", "--type", "hnsw", "--index-params", '{"M": 8}'])
    assert res.exit_code == 0, res.output
    assert f"exported {N} rows to cli" in res.stdout
    assert lite["client"].describe_index("cli", "embedding")["index_type"] == "HNSW"
    d16 = str(write_shard_dir(lite["root"] / "cli16", random_vectors(5, 16)))
    assert "dim 32" in _one_error_line(runner.invoke(app, [*base[:2], d16, *base[3:], "--collection", "cli"]))
    assert "JSON object" in _one_error_line(
        runner.invoke(app, [*base, "--collection", "x", "--index-params", "[1]"])
    )
    assert "IVF_PQ" in _one_error_line(runner.invoke(app, [*base, "--collection", "x", "--type", "ivf_pq"]))
    assert "not an embedding directory" in _one_error_line(
        runner.invoke(app, [*base[:2], str(lite["root"]), *base[3:], "--collection", "x"])
    )


def test_cli_without_pymilvus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs whether or not pymilvus is installed: the one line says how to install it."""
    shards = write_shard_dir(tmp_path / "s", random_vectors(5, 8))
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if not installed
    res = runner.invoke(
        app, ["index", "export-milvus", str(shards), "--uri", "http://h:19530", "--collection", "x"]
    )
    assert 'pip install "uniretrieve[milvus]"' in _one_error_line(res)
