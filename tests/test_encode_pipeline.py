"""encode_corpus end to end on a tiny real model: fast path == one-at-a-time Encoder.encode, bad inputs recorded,
interrupted runs resume to exactly the uninterrupted result, incremental updates, refusal, ranks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_image
from tests.encode_helpers import make_image_folder, make_mixed_jsonl, read_dir
from uniretrieve.data.corpus import Corpus, CorpusError, CorpusSpec
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.manifest import SettingsMismatchError, read_manifest
from uniretrieve.embed.pipeline import encode_corpus
from uniretrieve.embed.reader import open_shards
from uniretrieve.embed.writer import read_errors
from uniretrieve.models.encoder import Encoder
from uniretrieve.types import Item


def cfg(inp: Path, out: Path, model: Path, **kw) -> EncodeConfig:
    kw.setdefault("shard_rows", 3)
    kw.setdefault("batch_size", 2)
    return EncodeConfig(input=str(inp), output=str(out), model=str(model), progress=False, **kw)


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("part-*.parquet"))}


class Interrupt(Exception):
    pass


def stop_after(n: int):
    def hook(batches: int) -> None:
        if batches >= n:
            raise Interrupt(f"killed after {batches} batches")

    return hook


def test_fast_path_equals_one_at_a_time_encode(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    path = make_mixed_jsonl(tmp_path / "d")
    out = tmp_path / "out"
    res = encode_corpus(
        cfg(path, out, tiny_model_dir, id_column="id", dtype="float32", instruction="Represent it"),
        encoder=tiny_encoder,
    )
    assert (res.encoded, res.skipped, res.complete) == (6, {}, True)
    ids, vecs, _ = read_dir(out)
    recs = {
        r.id: r
        for r in Corpus(CorpusSpec(path=str(path), id_column="id", instruction="Represent it")).records()
    }
    for i, rid in enumerate(ids):
        r = recs[rid]
        slow = tiny_encoder.encode(
            [Item(text=r.text, image=r.image, instruction=r.instruction)], batch_size=1
        )[0]
        np.testing.assert_allclose(vecs[i], slow, atol=2e-5, err_msg=rid)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    full = pq.read_table(out / "part-000000.parquet").to_pylist()
    assert [r["id"] for r in full] == ["t0", "i0", "m0"]  # shard = contiguous range of the input, in order
    assert [r["modality"] for r in full] == ["text", "image", "image_text"]
    assert full[1]["width"] == 36 and full[1]["height"] == 30 and full[0]["width"] is None
    assert json.loads(full[2]["metadata"]) == {"score": 0.5}
    assert full[0]["instruction"] == "Represent it" and full[0]["source"] == "items.jsonl:0"
    assert full[0]["content_hash"] == recs["t0"].content_hash


def test_float16_default_vs_float32(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=3, bad=False)
    encode_corpus(cfg(root, tmp_path / "h", tiny_model_dir), encoder=tiny_encoder)
    encode_corpus(cfg(root, tmp_path / "f", tiny_model_dir, dtype="float32"), encoder=tiny_encoder)
    h, f = open_shards(tmp_path / "h"), open_shards(tmp_path / "f")
    assert pq.read_schema(h.shards[0].path).field("embedding").type.value_type == pa.float16()
    assert pq.read_schema(f.shards[0].path).field("embedding").type.value_type == pa.float32()
    vh, vf = h.read_vectors(range(3)), f.read_vectors(range(3))
    assert np.abs(vh - vf).max() < 2e-3 and not np.array_equal(vh, vf)
    assert h.shards[0].path.stat().st_size < f.shards[0].path.stat().st_size


def test_bad_images_skipped_and_recorded(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=4)
    out = tmp_path / "out"
    res = encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    assert res.encoded == 4 and res.skipped == {"corrupt image": 1, "empty file": 1}
    errors = {e["id"]: e for e in read_errors(out)}
    assert set(errors) == {"broken.jpg", "empty.png"}
    assert errors["broken.jpg"]["path"] == str((root / "broken.jpg").resolve())
    assert errors["broken.jpg"]["kind"] == "corrupt image" and errors["broken.jpg"]["reason"].startswith(
        "image: "
    )
    assert errors["empty.png"]["reason"] == "image: empty file (0 bytes)"
    ids, _, _ = read_dir(out)
    assert ids == ["img00.png", "img02.png", "img03.jpg", "sub/img01.jpg"]
    m = read_manifest(out)
    assert m.segments[0].counts["skipped"] == {"corrupt image": 1, "empty file": 1}


def test_table_bad_rows_recorded_and_truncation_counted(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    p = tmp_path / "t.jsonl"
    long = " ".join(["word"] * 300)
    p.write_bytes(
        b'{"text": "fine"}\n{"text": ""}\n{bad json\n{"image": "gone.png"}\n'
        + json.dumps({"text": long}).encode()
        + b'\n{"text": "caf\xe9"}\n'
    )
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="max_text_tokens"):
        encode_corpus(cfg(p, out, tiny_model_dir, max_text_tokens=16), encoder=tiny_encoder)
    short = Encoder.from_pretrained(str(tiny_model_dir), device="cpu", max_text_tokens=16)
    res = encode_corpus(cfg(p, out, tiny_model_dir, max_text_tokens=16), encoder=short)
    assert res.encoded == 2 and res.truncated == 1
    assert res.skipped == {"empty text": 1, "bad JSON": 1, "missing file": 1, "not UTF-8": 1}
    assert {e["source"] for e in read_errors(out)} == {"t.jsonl:1", "t.jsonl:2", "t.jsonl:3", "t.jsonl:5"}
    texts = pq.read_table(out / "part-000001.parquet").column("text").to_pylist()
    assert long in texts  # the stored text is the user's, not the truncated one


def test_interrupted_run_resumes_to_identical_rows(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=9)
    ref, out = tmp_path / "ref", tmp_path / "out"
    encode_corpus(cfg(root, ref, tiny_model_dir), encoder=tiny_encoder)
    with pytest.raises(Interrupt):
        encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder, on_batch=stop_after(4))
    m = read_manifest(out)
    assert not m.complete and 0 < len(m.shards) < 4
    # a writer killed mid-file leaves a temp behind; it must be ignored and cleaned
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".part-000003.parquet.tmp-{socket.gethostname()}-{dead.pid}-1").write_bytes(b"PAR1 torn")
    res = encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    assert (
        res.complete and res.encoded + sum(res.skipped.values()) < 11
    )  # only the unfinished chunks were redone
    assert shard_bytes(out).keys() == shard_bytes(ref).keys()
    a, b = read_dir(ref), read_dir(out)
    assert a[0] == b[0] and len(set(b[0])) == len(b[0]) == 9  # no duplicate, no gap
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2].equals(b[2])
    assert sorted(json.dumps(e, sort_keys=True) for e in read_errors(out)) == sorted(
        json.dumps(e, sort_keys=True) for e in read_errors(ref)
    )
    assert not list(out.glob(".*tmp*"))


def test_rerun_of_finished_job_encodes_nothing(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=4)
    out = tmp_path / "out"
    encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    before = shard_bytes(out)
    errors_before = (out / "errors.jsonl").read_text()
    manifest_before = (out / "manifest.json").read_text()
    res = encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    assert (res.planned, res.encoded, res.skipped, res.segment) == (0, 0, {}, None)
    assert shard_bytes(out) == before and (out / "errors.jsonl").read_text() == errors_before
    assert (out / "manifest.json").read_text() == manifest_before
    assert len(read_manifest(out).segments) == 1


def test_added_and_changed_files_encode_only_those(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=5)
    out = tmp_path / "out"
    encode_corpus(cfg(root, out, tiny_model_dir, dtype="float32"), encoder=tiny_encoder)
    make_image(100, (50, 50)).save(root / "img02.png")  # changed
    make_image(101).save(root / "new.png")  # added
    make_image(102).save(root / "empty.png")  # a formerly broken file, now fixed
    res = encode_corpus(cfg(root, out, tiny_model_dir, dtype="float32"), encoder=tiny_encoder)
    assert (res.planned, res.encoded, res.skipped) == (3, 3, {})
    ids, vecs, table = read_dir(out)
    assert sorted(ids) == sorted(
        ["img00.png", "img02.png", "img03.jpg", "img04.png", "sub/img01.jpg", "new.png", "empty.png"]
    )
    assert len(set(ids)) == len(ids)  # the old img02 row was superseded, not duplicated
    new02 = ids.index("img02.png")
    np.testing.assert_allclose(vecs[new02], tiny_encoder.encode_images([root / "img02.png"])[0], atol=2e-5)
    want = hashlib.sha256((root / "img02.png").read_bytes()).hexdigest()
    assert table.column("content_hash")[new02].as_py() == want
    assert {e["id"] for e in read_errors(out)} == {"broken.jpg"}  # the fixed file's old error is gone
    m = read_manifest(out)
    assert [s.complete for s in m.segments] == [True, True] and m.segments[1].planned_rows == 3
    assert open_shards(out, verify_checksums=True).num_rows == 7
    res = encode_corpus(cfg(root, out, tiny_model_dir, dtype="float32"), encoder=tiny_encoder)
    assert res.planned == 0


def test_other_settings_refused_and_overwrite_replaces(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=3, bad=False)
    out = tmp_path / "out"
    encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    before = shard_bytes(out)
    with pytest.raises(SettingsMismatchError, match=r"dtype: 'float16' \(directory\) vs 'float32' \(now\)"):
        encode_corpus(cfg(root, out, tiny_model_dir, dtype="float32"), encoder=tiny_encoder)
    with pytest.raises(
        SettingsMismatchError, match=r"(?s)instruction: None \(directory\) vs .Find it. \(now\).*--overwrite"
    ):
        encode_corpus(cfg(root, out, tiny_model_dir, instruction="Find it"), encoder=tiny_encoder)
    assert shard_bytes(out) == before  # refused before touching anything
    res = encode_corpus(cfg(root, out, tiny_model_dir, dtype="float32", overwrite=True), encoder=tiny_encoder)
    assert res.encoded == 3 and open_shards(out).dtype == "float32"
    assert read_manifest(out).settings["dtype"] == "float32"


def test_manifest_and_config_record_everything(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=4, bad=False)
    out = tmp_path / "out"
    encode_corpus(cfg(root, out, tiny_model_dir, instruction="Represent the image"), encoder=tiny_encoder)
    m = json.loads((out / "manifest.json").read_text())
    d = tiny_encoder.describe()
    assert m["model_id"] == d["model_id"] and m["weight_hash"] == d["weight_hash"] and m["family"] == "llava"
    assert m["prompt_regime"] == "e5v" and m["instruction"] == "Represent the image"
    assert (m["dim"], m["dtype"], m["normalized"], m["total_rows"], m["complete"]) == (
        d["dim"],
        "float16",
        True,
        4,
        True,
    )
    assert m["created"] and m["uniretrieve_version"]
    assert [s["rows"] for s in m["shards"]] == [3, 1]
    assert [(s["input_start"], s["input_end"]) for s in m["shards"]] == [(0, 3), (3, 4)]
    for s in m["shards"]:
        assert s["sha256"] == hashlib.sha256((out / s["path"]).read_bytes()).hexdigest()
    saved = json.loads((out / "encode_config.json").read_text())
    assert saved["instruction"] == "Represent the image" and saved["shard_rows"] == 3


def test_two_ranks_cover_input_exactly_once(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=9)
    single, split = tmp_path / "single", tmp_path / "split"
    encode_corpus(cfg(root, single, tiny_model_dir), encoder=tiny_encoder)
    r0 = encode_corpus(cfg(root, split, tiny_model_dir, rank=0, world_size=2), encoder=tiny_encoder)
    assert not r0.complete  # rank 1's chunks are still missing
    r1 = encode_corpus(cfg(root, split, tiny_model_dir, rank=1, world_size=2), encoder=tiny_encoder)
    assert r1.complete and r0.planned + r1.planned == 11 and r0.planned > 0 and r1.planned > 0
    assert {s.rank for s in read_manifest(split).shards} == {0, 1}
    assert shard_bytes(split) == shard_bytes(single)  # the same shards, byte for byte
    assert read_dir(split)[0] == read_dir(single)[0]


def test_workers_give_the_same_result(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=6)
    encode_corpus(cfg(root, tmp_path / "w0", tiny_model_dir), encoder=tiny_encoder)
    res = encode_corpus(cfg(root, tmp_path / "w2", tiny_model_dir, workers=2), encoder=tiny_encoder)
    assert res.skipped == {"corrupt image": 1, "empty file": 1}
    assert shard_bytes(tmp_path / "w2") == shard_bytes(tmp_path / "w0")


def test_duplicate_ids_rejected_before_any_work(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    p = tmp_path / "d.csv"
    p.write_text("id,text\na,x\nb,y\na,z\n")
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="'a' at rows 0, 2"):
        encode_corpus(cfg(p, out, tiny_model_dir, id_column="id"), encoder=tiny_encoder)
    assert not list(out.glob("part-*"))


def test_input_changed_during_unfinished_run(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=6, bad=False)
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder, on_batch=stop_after(3))
    shutil.copy(root / "img00.png", root / "aaa.png")  # sorts first: every position shifts
    res = encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)
    assert res.complete
    ids, _, _ = read_dir(out)
    assert sorted(ids) == sorted(
        [
            "aaa.png",
            *(f"img{i:02d}.{'png' if i % 2 == 0 else 'jpg'}" for i in range(6) if i != 1),
            "sub/img01.jpg",
        ]
    )
    assert len(ids) == len(set(ids))


RUNNER = """
import os, sys
import torch
torch.set_num_threads(1)
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.pipeline import encode_corpus
inp, out, model, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def hook(batches):
    if kill_after and batches >= kill_after:
        os.kill(os.getpid(), 9)  # no cleanup, no finally: like kill -9 or a power cut

cfg = EncodeConfig(input=inp, output=out, model=model, shard_rows=3, batch_size=2, device="cpu", progress=False)
encode_corpus(cfg, on_batch=hook)
"""


def run_script(
    tmp_path: Path, args: list[str], launcher: list[str] | None = None
) -> subprocess.CompletedProcess:
    script = tmp_path / "run_encode.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*(launcher or [sys.executable]), str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_kill_9_mid_job_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=9)
    ref, out = tmp_path / "ref", tmp_path / "out"
    encode_corpus(cfg(root, ref, tiny_model_dir), encoder=tiny_encoder)
    killed = run_script(tmp_path, [str(root), str(out), str(tiny_model_dir), "3"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not read_manifest(out).complete
    encode_corpus(cfg(root, out, tiny_model_dir), encoder=tiny_encoder)  # the same command again resumes
    a, b = read_dir(ref), read_dir(out)
    assert a[0] == b[0] and len(set(b[0])) == 9
    np.testing.assert_array_equal(a[1], b[1])
    assert shard_bytes(out) == shard_bytes(ref)
    assert len(read_errors(out)) == 2 and not list(out.glob(".*tmp*"))


@pytest.mark.slow
def test_torchrun_two_gloo_processes_equal_single_process(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=9)
    single, split = tmp_path / "single", tmp_path / "split"
    encode_corpus(cfg(root, single, tiny_model_dir), encoder=tiny_encoder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
    ]
    res = run_script(tmp_path, [str(root), str(split), str(tiny_model_dir), "0"], launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_manifest(split)
    assert m.complete and {s.rank for s in m.shards} == {0, 1} and m.segments[0].world_size == 2
    assert shard_bytes(split) == shard_bytes(single)
    assert read_dir(split)[0] == read_dir(single)[0]


def test_every_table_format_gives_the_same_vectors(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    texts = ["a red circle", "two green triangles", "a yellow star", "the quick brown fox"]
    (tmp_path / "c.txt").write_text("".join(t + "\n" for t in texts))
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts))
    )
    (tmp_path / "c.csv").write_text("text,n\n" + "".join(f"{t},{i}\n" for i, t in enumerate(texts)))
    pq.write_table(pa.table({"text": texts, "n": list(range(4))}), tmp_path / "c.parquet")
    got = {}
    for ext in ("txt", "jsonl", "csv", "parquet"):
        out = tmp_path / f"out-{ext}"
        res = encode_corpus(
            cfg(tmp_path / f"c.{ext}", out, tiny_model_dir, dtype="float32"), encoder=tiny_encoder
        )
        assert res.encoded == 4, ext
        ids, vecs, table = read_dir(out)
        assert ids == [f"c.{ext}:{i}" for i in range(4)] and table.column("text").to_pylist() == texts
        got[ext] = vecs
        if ext != "txt":
            meta = pq.read_table(out / "part-000000.parquet").column("metadata").to_pylist()
            assert [str(json.loads(m)["n"]) for m in meta] == ["0", "1", "2"]  # csv keeps strings
    ref = tiny_encoder.encode_texts(texts, batch_size=1)
    for ext, vecs in got.items():
        np.testing.assert_allclose(vecs, ref, atol=2e-5, err_msg=ext)


def test_input_shrinking_mid_run_never_commits_a_chunk_with_a_gap(tmp_path) -> None:
    from uniretrieve.embed.batches import work_batches
    from uniretrieve.embed.manifest import Manifest
    from uniretrieve.embed.plan import build_listing, compute_plan, new_segment
    from uniretrieve.embed.schema import EmbeddingSpec

    p = tmp_path / "c.txt"
    p.write_text("".join(f"caption {i}\n" for i in range(10)))
    corpus = Corpus(CorpusSpec(path=str(p)))
    listing = build_listing(corpus)
    m = Manifest.new(EmbeddingSpec(dim=4))
    plan = compute_plan(listing, tmp_path, m, 0)
    seg = new_segment(m, listing, plan, shard_rows=3, world_size=1)
    full = list(work_batches(corpus, listing, plan, seg, [0, 1, 2, 3], 2, 2))
    assert [w.chunk for w in full if w.last] == [0, 1, 2, 3]
    assert sorted(r.position for w in full for r in w.records) == list(range(10))
    p.write_text("".join(f"caption {i}\n" for i in range(8)))  # truncated after the listing
    got = []
    with pytest.raises(CorpusError, match=r"chunk 2 has 2 of its 3 rows"):
        for w in work_batches(corpus, listing, plan, seg, [0, 1, 2, 3], 2, 2):
            got.append(w)
    assert {w.chunk for w in got} == {0, 1}  # chunk 2 was never handed on, so it can never be committed short


def test_freed_heap_memory_is_returned_after_every_batch(
    tmp_path, tiny_model_dir, tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encode loop hands glibc's free pages back once per batch (freed batch tensors between a chunk's rows
    otherwise stay resident); the call itself works on this libc."""
    import ctypes

    from uniretrieve.embed import pipeline

    assert ctypes.CDLL(None).malloc_trim(0) in (0, 1)
    pipeline.release_free_memory()
    calls: list[int] = []
    batches: list[int] = []
    monkeypatch.setattr(pipeline, "release_free_memory", lambda: calls.append(1))
    root = make_image_folder(tmp_path / "imgs", n=5, bad=False)
    config = cfg(root, tmp_path / "out", tiny_model_dir, batch_size=2)
    encode_corpus(config, encoder=tiny_encoder, on_batch=batches.append)
    assert len(batches) == 3 and len(calls) == 3
