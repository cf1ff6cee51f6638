"""Encode checks the shards it resumes from: a missing, torn, replaced or tampered shard is found, and exactly its
rows are encoded again; a manifest naming a path outside its directory is refused before anything is touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.encode_helpers import make_image_folder, read_dir
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.manifest import ManifestError, read_manifest
from uniretrieve.embed.pipeline import encode_corpus
from uniretrieve.embed.reader import open_shards


def cfg(inp: Path, out: Path, model: Path, **kw) -> EncodeConfig:
    return EncodeConfig(
        input=str(inp), output=str(out), model=str(model), progress=False, shard_rows=2, batch_size=2, **kw
    )


def by_id(root: Path) -> dict[str, bytes]:
    ids, vecs, _ = read_dir(root)
    return {i: v.tobytes() for i, v in zip(ids, vecs, strict=True)}


@pytest.fixture
def encoded(tmp_path: Path, tiny_model_dir: Path, tiny_encoder):
    corpus = make_image_folder(tmp_path / "imgs", n=5)
    out = tmp_path / "out"
    encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    return corpus, out, by_id(out)


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "missing": lambda p: p.unlink(),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-40]),
    "wrong_sha256": lambda p: flip_byte(p, 200),  # same size and rows, different bytes
    "other_rows": lambda p: pq.write_table(pq.read_table(p).slice(0, 1), p),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_shard_rows_are_encoded_again(encoded, tiny_model_dir, tiny_encoder, kind) -> None:
    corpus, out, want = encoded
    victim = out / read_manifest(out).shards[0].path
    DAMAGE[kind](victim)
    res = encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    assert res.repaired == [victim.name]
    assert res.encoded == 2 and res.planned == 2  # exactly the damaged shard's rows
    assert by_id(out) == want and res.complete
    open_shards(out, verify_checksums=True)
    again = encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    assert again.planned == 0 and again.repaired == []


def test_large_directory_hashes_only_with_verify(encoded, tiny_model_dir, tiny_encoder, monkeypatch) -> None:
    corpus, out, want = encoded
    monkeypatch.setattr("uniretrieve.embed.repair.CHEAP_HASH_BYTES", 0)  # as if the shards were large
    flip_byte(out / read_manifest(out).shards[1].path, 200)
    assert encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder).repaired == []
    res = encode_corpus(cfg(corpus, out, tiny_model_dir, verify=True), encoder=tiny_encoder)
    assert len(res.repaired) == 1 and by_id(out) == want


def test_damage_in_an_unfinished_run_redoes_that_chunk(
    encoded, tmp_path, tiny_model_dir, tiny_encoder
) -> None:
    corpus, out, want = encoded
    m = json.loads((out / "manifest.json").read_text())
    m["segments"][0]["complete"] = m["complete"] = False  # as if killed before the last chunk was recorded
    last = m["segments"][0]["done_chunks"].pop()
    m["shards"] = [s for s in m["shards"] if s["number"] != m["segments"][0]["shard_base"] + last]
    m["total_rows"] = sum(s["rows"] for s in m["shards"])
    (out / "manifest.json").write_text(json.dumps(m))
    victim = out / m["shards"][0]["path"]
    victim.unlink()
    res = encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    assert res.repaired == [victim.name] and res.segment == 0  # redone under its own name, in its segment
    assert by_id(out) == want and victim.exists()


def test_orphan_shards_are_removed(encoded, tiny_model_dir, tiny_encoder) -> None:
    corpus, out, want = encoded
    (out / "part-000001-r3.parquet").write_bytes(b"left by a killed finalise")
    (out / "part-000099.parquet").write_bytes(b"superseded, not in the manifest")
    (out / "notes.parquet").write_bytes(b"not ours")
    encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    assert not (out / "part-000001-r3.parquet").exists() and not (out / "part-000099.parquet").exists()
    assert (out / "notes.parquet").exists() and by_id(out) == want


@pytest.mark.parametrize("bad", ["../victim/part-000004.parquet", "/etc/passwd", "sub/../../x.parquet", ""])
def test_manifest_path_outside_the_directory_is_refused(
    encoded, tmp_path, tiny_model_dir, tiny_encoder, bad
) -> None:
    corpus, out, _ = encoded
    victim = tmp_path / "victim" / "part-000004.parquet"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][0]["path"] = bad
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="outside its directory"):
        encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    with pytest.raises(ManifestError, match="outside its directory"):
        open_shards(out)
    assert victim.read_bytes() == b"precious"


def test_vectors_unchanged_by_a_repair(encoded, tiny_model_dir, tiny_encoder) -> None:
    corpus, out, want = encoded
    (out / read_manifest(out).shards[-1].path).unlink()
    encode_corpus(cfg(corpus, out, tiny_model_dir), encoder=tiny_encoder)
    got = by_id(out)
    for k in want:
        np.testing.assert_array_equal(np.frombuffer(got[k], np.float16), np.frombuffer(want[k], np.float16))
