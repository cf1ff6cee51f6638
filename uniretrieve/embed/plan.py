"""Planning an encode run: list the input, compare it with what the directory holds, cut the rest into chunks.

The listing is the (id, content_hash) of every input row in order, kept as Arrow arrays (~100 bytes a row, no
Python object per row). The *plan* of a segment is the sorted positions of listing rows whose (id, hash) is in no
earlier segment — neither as a stored row nor as a recorded error — so a finished job plans nothing, and a changed
or added file is planned alone. Chunk k of a segment is plan[k·S : (k+1)·S] and becomes shard `shard_base + k`;
rank r of W encodes the chunks with k mod W = r. The plan depends only on the input and on earlier segments, so every
rank and every resumed run computes the same one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from uniretrieve.data.corpus import Corpus, CorpusError
from uniretrieve.embed.manifest import Manifest, SegmentInfo, utc_now
from uniretrieve.embed.writer import read_errors

FLUSH_ROWS = 65536


@dataclass
class Listing:
    ids: pa.Array
    hashes: pa.Array
    sha256: str

    def __len__(self) -> int:
        return len(self.ids)

    def keys(self) -> pa.Array:
        return pc.binary_join_element_wise(self.ids, self.hashes, "\x00")


def build_listing(corpus: Corpus) -> Listing:
    """One streaming pass over the corpus (hashing image bytes); rejects duplicate ids before any work."""
    ids: list[pa.Array] = []
    hashes: list[pa.Array] = []
    h = hashlib.sha256()
    buf_i: list[str] = []
    buf_h: list[str] = []

    def flush() -> None:
        if buf_i:
            h.update(
                ("\x00".join(buf_i) + "\x01" + "\x00".join(buf_h) + "\x02").encode("utf-8", "surrogatepass")
            )
            ids.append(pa.array(buf_i, type=pa.string()))
            hashes.append(pa.array(buf_h, type=pa.string()))
            buf_i.clear()
            buf_h.clear()

    for rec in corpus.records(hash_content=True):
        buf_i.append(rec.id)
        buf_h.append(rec.content_hash)
        if len(buf_i) >= FLUSH_ROWS:
            flush()
    flush()
    listing = Listing(
        ids=pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
        hashes=pa.concat_arrays(hashes) if hashes else pa.array([], pa.string()),
        sha256=h.hexdigest(),
    )
    check_unique_ids(listing.ids, where=str(corpus.path))
    return listing


def check_unique_ids(ids: pa.Array, where: str, show: int = 5) -> None:
    if len(ids) == 0 or pc.count_distinct(ids).as_py() == len(ids):
        return
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    lines = []
    for value in dup[:show].to_pylist():
        rows = np.flatnonzero(pc.equal(ids, value).to_numpy(zero_copy_only=False)).tolist()
        lines.append(f"id {value!r} at rows {', '.join(map(str, rows[:10]))}")
    more = f" (and {len(dup) - show} more)" if len(dup) > show else ""
    raise CorpusError(
        f"{where} has {len(dup)} duplicate id(s){more}: "
        + "; ".join(lines)
        + ". Ids must be unique: fix the rows, "
        "or drop --id-column to use <file>:<row> ids"
    )


def stored_keys(root: Path, manifest: Manifest, before_segment: int) -> pa.Array:
    """`id\\0content_hash` of every row stored or recorded as an error by segments before `before_segment`."""
    parts: list[pa.Array] = []
    for shard in manifest.shards:
        if shard.segment < before_segment:
            t = pq.read_table(root / shard.path, columns=["id", "content_hash"])
            hashes = pc.fill_null(t.column("content_hash"), "")
            parts.extend(pc.binary_join_element_wise(t.column("id"), hashes, "\x00").chunks)
    errs = [e for e in read_errors(root) if int(e.get("segment", 0)) < before_segment]
    if errs:
        parts.append(pa.array([f"{e['id']}\x00{e.get('content_hash') or ''}" for e in errs], pa.string()))
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def compute_plan(listing: Listing, root: Path, manifest: Manifest | None, segment: int) -> np.ndarray:
    """Sorted listing positions that segment `segment` must encode."""
    if manifest is None or (not manifest.shards and not read_errors(root)):
        return np.arange(len(listing), dtype=np.int64)
    done = stored_keys(root, manifest, segment)
    if len(done) == 0:
        return np.arange(len(listing), dtype=np.int64)
    have = pc.is_in(listing.keys(), value_set=done).to_numpy(zero_copy_only=False)
    return np.flatnonzero(~have).astype(np.int64)


def plan_sha256(plan: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(plan, dtype="<i8").tobytes()).hexdigest()


def new_segment(
    manifest: Manifest, listing: Listing, plan: np.ndarray, shard_rows: int, world_size: int
) -> SegmentInfo:
    base = manifest.next_shard_number()
    return SegmentInfo(
        index=len(manifest.segments),
        created=utc_now(),
        input_rows=len(listing),
        listing_sha256=listing.sha256,
        shard_base=base,
        chunks=-(-len(plan) // shard_rows),
        shard_rows=shard_rows,
        world_size=world_size,
        planned_rows=len(plan),
        counts={"plan_sha256": plan_sha256(plan)},
    )


def rank_chunks(segment: SegmentInfo, rank: int, world_size: int) -> list[int]:
    """Chunks rank `rank` still has to encode: k mod world_size = rank, not yet done."""
    done = set(segment.done_chunks)
    return [k for k in range(rank, segment.chunks, world_size) if k not in done]


def chunk_bounds(segment: SegmentInfo, k: int) -> tuple[int, int]:
    """[start, end) of chunk k in the segment's plan."""
    start = k * segment.shard_rows
    return start, min(start + segment.shard_rows, segment.planned_rows)


def stale_ids(root: Path, manifest: Manifest, listing: Listing) -> int:
    """Stored rows whose id is no longer in the input (kept; reported)."""
    n = 0
    for shard in manifest.shards:
        ids = pq.read_table(root / shard.path, columns=["id"]).column("id")
        kept = pc.sum(pc.is_in(ids, value_set=listing.ids).cast(pa.int64())).as_py() or 0
        n += len(ids) - int(kept)
    return n
