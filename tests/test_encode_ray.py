"""`encode --engine ray`: a Ray Data pipeline over a local Ray instance gives the shard set a single-process run
gives (same ids, vectors, metadata, skipped rows), with an actor killed mid-run and with the driver killed and the
command rerun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.encode_helpers import read_dir
from tests.test_encode_pipeline import Interrupt, cfg, stop_after
from uniretrieve.cli.app import app
from uniretrieve.embed.pipeline import encode_corpus
from uniretrieve.embed.reader import open_shards
from uniretrieve.embed.writer import read_errors

runner = CliRunner()


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    import tests.ray_faults
    from uniretrieve.embed import ray_engine

    ray.cloudpickle.register_pickle_by_value(tests.ray_faults)  # the workers need not import tests/
    ray_engine.connect(None)
    yield ray
    ray_engine.shutdown()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Text rows, image rows (one corrupt) and image+text rows, relative paths, over 6 chunks."""
    (tmp_path / "pics").mkdir()
    rows = []
    for i in range(16):
        rows.append({"id": f"t{i}", "text": f"caption number {i} " + "word " * (i % 5), "lang": "en"})
    for i in range(5):
        make_image(40 + i, (30 + 3 * i, 28)).save(tmp_path / "pics" / f"p{i}.png")
        rows.append(
            {"id": f"i{i}", "image": f"pics/p{i}.png", **({"text": "with a caption"} if i % 2 else {})}
        )
    (tmp_path / "pics" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows.append({"id": "bad", "image": "pics/bad.png"})
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _same(a: Path, b: Path) -> None:
    ids_a, va, ta = read_dir(a)
    ids_b, vb, tb = read_dir(b)
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    assert sorted(ids_a) == sorted(ids_b) and len(set(ids_b)) == len(ids_b)  # no duplicate, no gap
    np.testing.assert_allclose(va[order_a], vb[order_b], atol=1e-5)
    for col in ("content_hash", "source", "text"):
        assert [ta.column(col)[int(i)].as_py() for i in order_a] == [
            tb.column(col)[int(i)].as_py() for i in order_b
        ]
    meta_a = open_shards(a).read_rows(range(len(ids_a)), columns=("id", "metadata")).to_pylist()
    meta_b = open_shards(b).read_rows(range(len(ids_b)), columns=("id", "metadata")).to_pylist()
    assert sorted(meta_a, key=lambda r: r["id"]) == sorted(meta_b, key=lambda r: r["id"])
    assert (
        sorted(e["id"] for e in read_errors(a))
        == sorted(e["id"] for e in read_errors(b))
        == ["items.jsonl:21"]
    )


def test_ray_engine_with_a_killed_actor_equals_one_process(
    tmp_path, corpus, tiny_model_dir, local_ray, monkeypatch
) -> None:
    from tests.ray_faults import DyingOnce
    from uniretrieve.embed import ray_engine

    monkeypatch.setattr(
        ray_engine, "LOCAL_DESCRIBE_BYTES", 0
    )  # describe the model in a Ray task, as for a 7B

    plain = encode_corpus(cfg(corpus, tmp_path / "plain", tiny_model_dir, shard_rows=4, dtype="float32"))
    marker = tmp_path / "died"
    dying = type("DyingHere", (DyingOnce,), {"marker": str(marker), "after": 3})
    r = encode_corpus(
        cfg(corpus, tmp_path / "ray", tiny_model_dir, shard_rows=4, dtype="float32", engine="ray", actors=2),
        ray_actor=dying,
    )
    assert marker.exists(), "the actor was never killed"
    assert r.complete and r.encoded == plain.encoded == 21 and r.skipped == plain.skipped
    _same(tmp_path / "plain", tmp_path / "ray")


def test_ray_engine_resumes_after_the_driver_dies(tmp_path, corpus, tiny_model_dir, local_ray) -> None:
    encode_corpus(cfg(corpus, tmp_path / "plain", tiny_model_dir, shard_rows=4, dtype="float32"))
    c = cfg(corpus, tmp_path / "ray", tiny_model_dir, shard_rows=4, dtype="float32", engine="ray", actors=2)
    with pytest.raises(Interrupt):
        encode_corpus(c, on_batch=stop_after(4))
    first = open_shards(tmp_path / "ray").num_rows
    assert 0 < first < 21
    r = encode_corpus(c)
    assert r.complete and r.planned < 22
    _same(tmp_path / "plain", tmp_path / "ray")


def test_ray_engine_refuses_ranks(tmp_path, corpus, tiny_model_dir) -> None:
    r = runner.invoke(
        app,
        ["encode", str(corpus), "-o", str(tmp_path / "o"), "-m", str(tiny_model_dir), "--engine", "spark"],
    )
    assert r.exit_code == 2 and "engine" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="without ranks"):
        encode_corpus(
            cfg(corpus, tmp_path / "o", tiny_model_dir, engine="ray", rank=0, world_size=2), encoder=object()
        )


def test_on_disk_build_filled_by_ray_tasks(tmp_path, local_ray) -> None:
    import faiss

    from tests.index_helpers import clustered_vectors, quiet
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.ondisk import read_version_index
    from uniretrieve.index.source import ArraySource
    from uniretrieve.index.store import version_dir

    x = clustered_vectors(3000, 16, seed=3)
    for name, engine in (("local", "local"), ("ray", "ray")):
        cfg = BuildConfig(on_disk=True, nlist=16, tune_queries=100, workers=2, engine=engine)
        build_index(ArraySource(x), tmp_path / name, cfg, log=quiet)
    a, b = (read_version_index(version_dir(tmp_path / n)) for n in ("local", "ray"))
    for ix in (a, b):
        faiss.extract_index_ivf(ix).nprobe = 16
    np.testing.assert_array_equal(a.search(x[:30], 5)[1], b.search(x[:30], 5)[1])
    assert b.ntotal == 3000
