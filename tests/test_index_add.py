"""`index add`: appending shards equals building on all of them; other models or dims are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.index_helpers import clustered_vectors, quiet, write_shard_dir
from tests.test_index_build import assert_same_contents
from uniretrieve.cli.app import app
from uniretrieve.index.add import IndexMismatchError, add_to_index
from uniretrieve.index.build import build_index
from uniretrieve.index.idmap import read_idmap
from uniretrieve.index.meta import BuildConfig, read_meta
from uniretrieve.index.source import ShardSource
from uniretrieve.index.store import version_dir

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("faiss_one_thread")


@pytest.fixture
def two_shard_dirs(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    x = clustered_vectors(3000, 32, seed=21)
    texts = [f"item {i}" for i in range(3000)]
    a = write_shard_dir(tmp_path / "a", x[:2000], shard_rows=700, columns={"text": texts[:2000]})
    b = write_shard_dir(
        tmp_path / "b", x[2000:], shard_rows=700, id_prefix="b", columns={"text": texts[2000:]}
    )
    return a, b, x


@pytest.mark.parametrize("index_type", ["flat", "ivf", "ivfpq", "hnsw"])
def test_add_equals_full_build(tmp_path: Path, two_shard_dirs, index_type: str) -> None:
    a, b, _ = two_shard_dirs
    config = BuildConfig(index_type=index_type, nlist=32, target_recall=0.9, tune_queries=100)
    build_index(ShardSource(a), tmp_path / "inc", config, log=quiet)
    add_to_index(tmp_path / "inc", ShardSource(b), all_vectors=ShardSource([a, b]), log=quiet)
    # full build over both directories with the same training sample (drawn from a)
    build_index(ShardSource([a, b]), tmp_path / "full", config, train_source=ShardSource(a), log=quiet)
    inc = faiss.read_index(str(version_dir(tmp_path / "inc") / "index.faiss"))
    full = faiss.read_index(str(version_dir(tmp_path / "full") / "index.faiss"))
    assert inc.ntotal == full.ntotal == 3000
    if index_type == "hnsw":  # graph links depend on insertion batches; the stored vectors must not
        np.testing.assert_array_equal(inc.reconstruct_n(0, 3000), full.reconstruct_n(0, 3000))
    else:
        assert_same_contents(inc, full, index_type)
    im_inc = read_idmap(version_dir(tmp_path / "inc") / "idmap.parquet")
    im_full = read_idmap(version_dir(tmp_path / "full") / "idmap.parquet")
    assert im_inc.equals(im_full)
    assert im_inc.column("id").to_pylist()[1999:2001] == ["1999", "b0"]
    meta = read_meta(tmp_path / "inc")
    assert meta.num_vectors == 3000 and [s["first_id"] for s in meta.sources] == [0, 2000]
    assert meta.tuning["recall"] >= 0.9 and "stale" not in meta.tuning


def test_id_map_stays_aligned_with_vectors(tmp_path: Path, two_shard_dirs) -> None:
    """Every internal id's vector is the vector stored at its id map's shard row."""
    a, b, x = two_shard_dirs
    build_index(ShardSource(a), tmp_path / "i", BuildConfig(index_type="flat", tune_queries=20), log=quiet)
    add_to_index(tmp_path / "i", ShardSource(b), log=quiet)
    index = faiss.read_index(str(version_dir(tmp_path / "i") / "index.faiss"))
    idmap = read_idmap(version_dir(tmp_path / "i") / "idmap.parquet")
    import pyarrow.parquet as pq

    from uniretrieve.embed.schema import arrow_to_vectors

    for iid in (0, 699, 700, 1999, 2000, 2999):
        row = idmap.slice(iid, 1).to_pylist()[0]
        stored = arrow_to_vectors(pq.read_table(row["shard"]).column("embedding"), 32)[row["row"]]
        np.testing.assert_allclose(index.reconstruct(iid), stored, atol=0)
        np.testing.assert_allclose(stored, x[iid], atol=0)
    assert read_meta(tmp_path / "i").tuning["stale"] is True  # not re-tuned without all vectors


def test_add_refuses_other_model_and_dim(tmp_path: Path, two_shard_dirs) -> None:
    a, _, _ = two_shard_dirs
    build_index(ShardSource(a), tmp_path / "i", BuildConfig(index_type="flat", tune_queries=20), log=quiet)
    before = (version_dir(tmp_path / "i") / "index.faiss").read_bytes()
    other = write_shard_dir(
        tmp_path / "other", clustered_vectors(50, 32), model_id="other-model", weight_hash="w9"
    )
    with pytest.raises(IndexMismatchError, match=r"model_id: 'test-model' \(index\) vs 'other-model'"):
        add_to_index(tmp_path / "i", ShardSource(other), log=quiet)
    small = write_shard_dir(tmp_path / "small", clustered_vectors(50, 16))
    with pytest.raises(IndexMismatchError, match="16-d vectors but the index holds 32-d"):
        add_to_index(tmp_path / "i", ShardSource(small), log=quiet)
    assert (version_dir(tmp_path / "i") / "index.faiss").read_bytes() == before  # nothing was touched
    res = runner.invoke(app, ["index", "add", str(other), "--index", str(tmp_path / "i")])
    assert res.exit_code == 2 and "other settings" in res.output


def test_cli_build_then_add(tmp_path: Path, two_shard_dirs) -> None:
    a, b, _ = two_shard_dirs
    out = tmp_path / "idx"
    res = runner.invoke(
        app,
        [
            "index",
            "build",
            str(a),
            "--out",
            str(out),
            "--type",
            "auto",
            "--memory-budget",
            "1GB",
            "--target-recall",
            "0.9",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "index: flat (Flat)" in res.output and "expected memory" in res.output and "Why:" in res.output
    meta = json.loads((version_dir(out) / "index.json").read_text())
    assert meta["type"] == "flat" and meta["num_vectors"] == 2000 and meta["metric"] == "ip"
    assert meta["sources"][0]["dirs"] == [str(a.resolve())]
    assert meta["config"]["target_recall"] == 0.9 and meta["build_seconds"]["total"] > 0
    res = runner.invoke(app, ["index", "add", str(b), "--index", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((version_dir(out) / "index.json").read_text())["num_vectors"] == 3000
    # a build into an existing index is refused; a missing shard dir is named
    res = runner.invoke(app, ["index", "build", str(a), "--out", str(out)])
    assert res.exit_code == 2 and "already holds an index" in res.output
    shutil.rmtree(b)
    res = runner.invoke(app, ["index", "build", str(b), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and str(b) in res.output
