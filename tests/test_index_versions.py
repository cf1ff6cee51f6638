"""Index versions and idempotent adds: one pointer per index, old versions kept while read, the flat layout of older
releases still read and converted, re-adds are no-ops, changed rows update, colliding corpora are refused, and
`index verify` tells a sound index from a tampered one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.index_helpers import clustered_vectors, quiet, to_flat_layout, write_shard_dir
from uniretrieve.cli.app import app
from uniretrieve.index.add import add_to_index
from uniretrieve.index.build import build_index
from uniretrieve.index.idmap import read_idmap
from uniretrieve.index.meta import BuildConfig, read_meta
from uniretrieve.index.source import ShardSource
from uniretrieve.index.store import read_pointer, version_dir
from uniretrieve.index.update import IdCollisionError
from uniretrieve.index.verify import verify_index
from uniretrieve.search.searcher import Searcher

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("faiss_one_thread")
D = 16


def corpus(root: Path, x: np.ndarray, *, prefix: str = "", hashes: list[str] | None = None) -> Path:
    hashes = hashes or [f"h{prefix}{i}" for i in range(len(x))]
    return write_shard_dir(root, x, shard_rows=120, id_prefix=prefix, columns={"content_hash": hashes})


def build(tmp_path: Path, src: Path, name: str = "idx", index_type: str = "flat") -> Path:
    out = tmp_path / name
    build_index(
        ShardSource(src),
        out,
        BuildConfig(index_type=index_type, nlist=8, tune_queries=20, target_recall=0.5),
        log=quiet,
        source_info={"dirs": [str(src.resolve())]},
    )
    return out


def add(out: Path, src: Path, log=quiet):
    return add_to_index(out, ShardSource(src), source_info={"dirs": [str(src.resolve())]}, log=log)


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_layout_pointer_and_old_versions_kept_while_read(tmp_path: Path) -> None:
    x = clustered_vectors(400, D, seed=1)
    a, b = corpus(tmp_path / "a", x[:300]), corpus(tmp_path / "b", x[300:], prefix="b")
    out = build(tmp_path, a)
    assert listing(out) == [".uniretrieve.lock", "CURRENT", "v-000001"]
    assert json.loads((out / "CURRENT").read_text())["dir"] == "v-000001"
    assert sorted(p.name for p in (out / "v-000001").iterdir()) == [
        ".readers",
        "hits",
        "idmap.parquet",
        "index.faiss",
        "index.json",
    ]
    reader = Searcher.load(out)
    add(out, b)
    # the reader holds v-000001: it stays, and the reader still answers from it
    assert listing(out) == [".uniretrieve.lock", "CURRENT", "v-000001", "v-000002"]
    assert reader.cpu_index.ntotal == 300 and reader.search(vectors=x[:1], k=1)[0][0].id == "0"
    assert Searcher.load(out).cpu_index.ntotal == 400
    reader.close()
    logs: list[str] = []
    add(out, b, log=logs.append)  # the same shards again: a no-op, which also clears the released version
    assert any("already in the index" in m for m in logs)
    assert listing(out) == [".uniretrieve.lock", "CURRENT", "v-000002"]
    assert read_meta(out).num_vectors == 400 and verify_index(out).ok


def test_flat_layout_of_older_releases_loads_and_converts(tmp_path: Path) -> None:
    x = clustered_vectors(300, D, seed=2)
    a, b = corpus(tmp_path / "a", x[:200]), corpus(tmp_path / "b", x[200:], prefix="b")
    out = build(tmp_path, a)
    to_flat_layout(out)  # what the previous release wrote
    assert verify_index(out).ok
    with Searcher.load(out) as s:
        assert s.search(vectors=x[:1], k=1)[0][0].id == "0"
        add(out, b)  # converts to versions; the flat files stay while the reader holds them
        assert (out / "index.faiss").exists() and read_pointer(out).path.name == "v-000001"
    add(out, b)
    assert listing(out) == [".uniretrieve.lock", "CURRENT", "v-000001"]
    idmap = read_idmap(version_dir(out) / "idmap.parquet")
    assert idmap.column("id").to_pylist() == [str(i) for i in range(200)] + [f"b{i}" for i in range(100)]
    assert read_meta(out).format_version == 2 and verify_index(out).ok


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_readd_skip_update_and_collision(tmp_path: Path, index_type: str) -> None:
    x = clustered_vectors(360, D, seed=3)
    a = corpus(tmp_path / "a", x[:300])
    out = build(tmp_path, a, index_type=index_type)
    # the same rows in other shards (another shard size, so other manifests): every row skipped
    logs: list[str] = []
    same = corpus(tmp_path / "a_copy", x[:300])
    shutil.rmtree(same)
    write_shard_dir(same, x[:300], shard_rows=77, columns={"content_hash": [f"h{i}" for i in range(300)]})
    add(out, same, log=logs.append)
    assert any("already in the index; nothing to add" in m for m in logs)
    assert read_pointer(out).path.name == "v-000001"
    # the corpus re-encoded in place: rows 10 and 11 changed, 60 rows new → 2 updates, 298 skips, 62 appended
    y = x.copy()
    y[10:12] = clustered_vectors(2, D, seed=99)
    hashes = [f"h{i}" for i in range(360)]
    hashes[10:12] = ["new10", "new11"]
    shutil.rmtree(a)
    corpus(a, y, hashes=hashes)
    logs.clear()
    meta = add(out, a, log=logs.append)
    assert any("updating 2 row(s)" in m and "'10', '11'" in m for m in logs)
    assert any("skipping 298 row(s)" in m for m in logs)
    assert meta.num_vectors == 362 and meta.deleted == 2 and meta.sources[-1]["rows"] == 62
    with Searcher.load(out) as s:
        hit = s.search(vectors=y[10:11], k=1)[0][0]
        assert hit.id == "10" and hit.internal_id == 300 and hit.score == pytest.approx(1.0, abs=1e-5)
        hits = s.search(vectors=x[10:11], k=362)[0]  # the replaced vector is never returned
        assert 10 not in [h.internal_id for h in hits] and len(hits) == 360
        assert len({h.id for h in hits}) == 360
        assert s.search(vectors=x[10:11], k=5, where="id = '11'")[0][0].internal_id == 301
    assert verify_index(out).ok
    # another corpus with the same ids and other content: refused, naming the collision; nothing changes
    other = corpus(tmp_path / "other", clustered_vectors(5, D, seed=7), hashes=[f"o{i}" for i in range(5)])
    with pytest.raises(IdCollisionError, match=r"5 id\(s\).*'0' \(.*a and .*other\)"):
        add(out, other)
    res = runner.invoke(app, ["index", "add", str(other), "--index", str(out)])
    assert res.exit_code == 2 and "taken by other items" in res.output and "'0'" in res.output
    assert read_pointer(out).path.name == "v-000002" and read_meta(out).num_vectors == 362


def test_verify_sound_and_tampered(tmp_path: Path) -> None:
    x = clustered_vectors(200, D, seed=4)
    a = corpus(tmp_path / "a", x)
    out = build(tmp_path, a)
    res = runner.invoke(app, ["index", "verify", str(out)])
    assert res.exit_code == 0 and "ok:" in res.output and "200 vectors, 200 live" in res.output

    def problems(path: Path) -> list[str]:
        r = runner.invoke(app, ["index", "verify", str(path)])
        assert r.exit_code == 2, r.output
        return [ln for ln in r.output.splitlines() if ln.startswith("problem:")]

    bad = tmp_path / "bad_meta"
    shutil.copytree(out, bad)
    m = version_dir(bad) / "index.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "num_vectors": 199}))
    assert any("index.faiss holds 200 vectors, index.json says 199" in p for p in problems(bad))
    bad = tmp_path / "bad_idmap"
    shutil.copytree(out, bad)
    im = version_dir(bad) / "idmap.parquet"
    pq.write_table(pq.read_table(im).slice(0, 150), im)
    assert any("idmap.parquet has 150 rows" in p for p in problems(bad))
    bad = tmp_path / "bad_pointer"
    shutil.copytree(out, bad)
    (bad / "CURRENT").write_text(
        json.dumps({"format": "uniretrieve-index-pointer", "version": 9, "dir": "v-000009"})
    )
    assert any("names v-000009, which does not exist" in p for p in problems(bad))
    (bad / "CURRENT").write_text(
        json.dumps({"format": "uniretrieve-index-pointer", "version": 1, "dir": "../x"})
    )
    assert any("does not name a version folder" in p for p in problems(bad))
    res = runner.invoke(app, ["search", "--index", str(bad), "--cpu", "a query"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    # the shards re-encoded since: the index no longer holds what they do
    shutil.rmtree(a)
    corpus(a, x[:150])
    assert any("changed since it was indexed" in p for p in problems(out))
    shutil.rmtree(a)
    res = runner.invoke(app, ["index", "verify", str(out)])
    assert res.exit_code == 0 and "not present" in res.output


def test_writer_lock_dies_with_its_holder(tmp_path: Path) -> None:
    import subprocess
    import sys

    from uniretrieve.io import file_lock

    lock = tmp_path / ".uniretrieve.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from uniretrieve.io import file_lock\n"
            f"with file_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError), file_lock(lock, blocking=False):
            pass
    finally:
        holder.kill()  # kill -9: no unlock, no cleanup
        holder.wait()
    with file_lock(lock, blocking=False):  # nothing stuck
        pass


def test_add_to_a_missing_index_is_refused_without_creating_it(tmp_path: Path) -> None:
    b = corpus(tmp_path / "b", clustered_vectors(10, D))
    res = runner.invoke(app, ["index", "add", str(b), "--index", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not an index directory" in res.output
    assert not (tmp_path / "nope").exists()


def test_failed_add_leaves_the_index_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_vectors(200, D, seed=8)
    a, b = corpus(tmp_path / "a", x[:100]), corpus(tmp_path / "b", x[100:], prefix="b")
    out = build(tmp_path, a)
    import uniretrieve.index.add as add_mod

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(add_mod, "_write_index", full_disk)
    with pytest.raises(OSError, match="No space"):
        add(out, b)
    assert listing(out) == [".uniretrieve.lock", "CURRENT", "v-000001"] and verify_index(out).ok
