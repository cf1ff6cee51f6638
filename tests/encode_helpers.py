"""Helpers for the encode tests: small corpora on disk and reading shard directories back (the session's tiny
Encoder is the `tiny_encoder` fixture in conftest.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import make_image


def make_image_folder(root: Path, n: int = 7, bad: bool = True) -> Path:
    """`n` good images (png/jpg, one in a sub-folder), a truncated JPEG, a zero-byte PNG and a sidecar .txt."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    for i in range(n):
        ext = "png" if i % 2 == 0 else "jpg"
        folder = root / "sub" if i == 1 else root
        make_image(i, (40 + 2 * i, 32 + i)).save(folder / f"img{i:02d}.{ext}")
    if bad:
        buf = io.BytesIO()
        make_image(99, (64, 64)).save(buf, format="JPEG")
        (root / "broken.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated download
        (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("a sidecar file, not an image")
    return root


def make_mixed_jsonl(root: Path) -> Path:
    """A jsonl with text, image, image+text and per-row-instruction rows; image paths relative to the file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pics").mkdir(exist_ok=True)
    for i in range(3):
        make_image(20 + i, (36 + 4 * i, 30)).save(root / "pics" / f"p{i}.png")
    rows = [
        {"id": "t0", "text": "a red circle above a blue square", "lang": "en"},
        {"id": "i0", "image": "pics/p0.png", "lang": "xx"},
        {"id": "m0", "text": "two green triangles", "image": "pics/p1.png", "score": 0.5},
        {"id": "q0", "text": "the quick brown fox", "instruction": "Find me an everyday image that matches"},
        {"id": "i1", "image": "pics/p2.png", "group_id": "g1"},
        {"id": "t1", "text": "a yellow star", "group_id": "g1"},
    ]
    path = root / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_dir(root: Path) -> tuple[list[str], np.ndarray, pa.Table]:
    """(ids, float32 vectors, full table) of a shard directory, via the reader."""
    from uniretrieve.embed.reader import open_shards

    ss = open_shards(root)
    ids: list[str] = []
    vecs = []
    tables = []
    for v, t in ss.iter_vector_blocks(block_rows=5, columns=("id", "content_hash", "source", "text")):
        ids.extend(t.column("id").to_pylist())
        vecs.append(v)
        tables.append(t)
    dim = ss.dim
    return ids, (np.concatenate(vecs) if vecs else np.empty((0, dim), np.float32)), pa.concat_tables(tables)


def write_parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path
