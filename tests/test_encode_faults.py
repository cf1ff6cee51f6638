"""Encode under kills: a kill before any filesystem step of a first encode or of an incremental re-encode (the
finalise that rewrites and deletes older shards included), followed by the same command, gives what an
uninterrupted run gives — same ids, vectors, manifest rows and error lines, no leftover files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import make_image
from tests.encode_helpers import make_image_folder, read_dir
from tests.faults import KILLED, run_cli, sweep_cli
from uniretrieve.embed.manifest import read_manifest
from uniretrieve.embed.writer import read_errors

ARGS = ["--shard-rows", "2", "--batch-size", "2", "--no-progress", "--device", "cpu"]


def encode_args(inp: Path, out: Path, model: Path) -> list[str]:
    return ["encode", str(inp), "-o", str(out), "-m", str(model), *ARGS]


def snapshot(out: Path) -> dict[str, Any]:
    """What a shard directory holds, without the timestamps: rows, vectors, manifest entries, errors, file names."""
    ids, vecs, table = read_dir(out)
    m = read_manifest(out)
    assert m is not None
    segments = [{k: v for k, v in vars(s).items() if k not in ("created", "config")} for s in m.segments]
    errors = sorted(
        json.dumps({k: v for k, v in e.items() if k != "path"}, sort_keys=True) for e in read_errors(out)
    )
    return {
        "ids": ids,
        "vectors": vecs.tobytes(),
        "hashes": table.column("content_hash").to_pylist(),
        "shards": [vars(s) for s in m.shards],
        "segments": segments,
        "total": (m.total_rows, m.complete),
        "errors": errors,
        "files": sorted(p.name for p in out.iterdir()),
    }


def change_corpus(root: Path) -> None:
    """An incremental update that makes finalise rewrite one old shard (img02 changed, img00 kept) and delete
    another (img03 and img04 both changed), fixes a broken file and adds one."""
    make_image(100, (50, 50)).save(root / "img02.png")
    make_image(103, (44, 40)).save(root / "img03.jpg")
    make_image(104, (40, 44)).save(root / "img04.png")
    make_image(102).save(root / "empty.png")
    make_image(101).save(root / "new.png")


def kill_everywhere(cmd: list[str], pristine: Path | None, work: Path, tmp_path: Path) -> int:
    out = tmp_path / "sweep"
    out.mkdir()
    res = sweep_cli(str(pristine) if pristine else "-", str(work), out, cmd)
    assert res["ref"] == 0, res["ref_output"]
    expected, steps = snapshot(out / "ref"), res["steps"]
    assert len(res["runs"]) == steps
    for run in res["runs"]:
        n, kill = run["step"], out / f"kill{run['step']}"
        assert run["killed"] == KILLED and run["rerun"] == 0, run
        assert snapshot(kill) == expected, f"kill before step {n} of {steps}"
    return steps


def test_kill_at_every_step_of_first_encode(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = make_image_folder(tmp_path / "imgs", n=3)
    work = tmp_path / "emb"
    steps = kill_everywhere(encode_args(corpus, work, tiny_model_dir), None, work, tmp_path)
    assert steps >= 8


def test_kill_at_every_step_of_incremental_encode(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = make_image_folder(tmp_path / "imgs", n=5)
    base = tmp_path / "base"
    first = run_cli(encode_args(corpus, base, tiny_model_dir))
    assert first.returncode == 0, first.stdout + first.stderr
    before = [s.path for s in read_manifest(base).shards]
    change_corpus(corpus)
    work = tmp_path / "emb"
    steps = kill_everywhere(encode_args(corpus, work, tiny_model_dir), base, work, tmp_path)
    assert steps >= 8
    ref = read_manifest(tmp_path / "sweep" / "ref")
    after = [s.path for s in ref.shards]
    # the finalise under test did both: one old shard rewritten under a new name, one deleted
    assert "part-000001-r1.parquet" in after and "part-000001.parquet" in before
    assert "part-000002.parquet" in before and "part-000002.parquet" not in after
    assert sorted(read_dir(tmp_path / "sweep" / "ref")[0]) == sorted(
        ["empty.png", "img00.png", "img02.png", "img03.jpg", "img04.png", "new.png", "sub/img01.jpg"]
    )
