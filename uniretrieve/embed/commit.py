"""Recording a written chunk: its error lines, then its shard in the manifest, under the directory lock; the last
chunk of a segment finalises it (older versions of re-encoded ids dropped, totals summed, segment marked complete).
`append_shards` is the same path for embedding caches that grow by whole blocks.

Runs on the ShardWriter's thread, after the shard file is renamed into place, so the manifest never names a file
that is not complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from uniretrieve.embed.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    SegmentInfo,
    ShardInfo,
    check_compatible,
    directory_lock,
    read_manifest,
    utc_now,
    write_manifest,
)
from uniretrieve.embed.plan import Listing
from uniretrieve.embed.repair import remove_orphans, unlink_all
from uniretrieve.embed.schema import EMBEDDING, EmbeddingSpec
from uniretrieve.embed.writer import (
    ChunkResult,
    ShardWriter,
    read_errors,
    replace_chunk_errors,
    shard_name,
    write_errors,
    write_shard_file,
)
from uniretrieve.io import remove_stale_temps


class SegmentCommitter:
    """`ShardWriter`'s commit for one segment: records a written chunk (errors, then its shard in the manifest) under
    the directory lock; the last chunk of the segment completes it."""

    def __init__(self, root: Path, segment: int, rank: int = 0) -> None:
        self.root, self.segment, self.rank = root, segment, rank

    def __call__(self, result: ChunkResult, name: str | None, digest: str, size: int) -> None:
        with directory_lock(self.root):
            m = read_manifest(self.root)
            if m is None:
                raise ManifestError(
                    f"{self.root / MANIFEST_NAME} disappeared while encoding; re-run to resume"
                )
            seg = m.segments[self.segment]
            replace_chunk_errors(self.root, seg.index, result.chunk, result.errors)
            if name is not None:
                m.add_shard(
                    ShardInfo(
                        path=name,
                        rows=result.rows,
                        input_start=result.input_start,
                        input_end=result.input_end,
                        sha256=digest,
                        rank=self.rank,
                        segment=seg.index,
                        number=result.shard_number,
                        bytes=size,
                    )
                )
            if result.chunk not in seg.done_chunks:
                seg.done_chunks = sorted([*seg.done_chunks, result.chunk])
            per_chunk = seg.counts.setdefault("chunks", {})
            per_chunk[str(result.chunk)] = {
                "encoded": result.rows,
                "skipped": dict(Counter(e["kind"] for e in result.errors)),
                "truncated": result.truncated,
            }
            superseded: list[str] = []
            if len(seg.done_chunks) == seg.chunks:
                superseded = self._finalise(m, seg)
            write_manifest(self.root, m)  # the switch: from here on the rewrites are the shards
            unlink_all(self.root, superseded)  # a kill before this leaves orphans, removed on the next start

    def _finalise(self, m: Manifest, seg: SegmentInfo) -> list[str]:
        """Segment done: sum its per-chunk counts and mark it (and the directory, if no other is open) complete.
        Returns the shard files the new manifest no longer names (deleted once it is written)."""
        totals: Counter[str] = Counter()
        encoded = truncated = 0
        for c in seg.counts.get("chunks", {}).values():
            encoded += int(c["encoded"])
            truncated += int(c["truncated"])
            totals.update(c["skipped"])
        seg.counts.update({"encoded": encoded, "truncated": truncated, "skipped": dict(totals)})
        seg.complete = True
        m.complete = all(s.complete for s in m.segments)
        return []


class ChunkCommitter(SegmentCommitter):
    """An encode's commit: as `SegmentCommitter`, and the last chunk first drops rows of older segments whose id
    this segment re-encoded."""

    def __init__(
        self, root: Path, plan: np.ndarray, listing: Listing, segment: int, rank: int, rows_per_group: int
    ) -> None:
        super().__init__(root, segment, rank)
        self.plan, self.listing, self.rows_per_group = plan, listing, rows_per_group

    def _finalise(self, m: Manifest, seg: SegmentInfo) -> list[str]:
        """Drop superseded rows (older versions of re-encoded ids) and their old error lines, then complete.

        A shard that loses rows is rewritten under a new name (`part-N-r<segment>`), never over the file the
        manifest names, so a kill at any step leaves the old manifest with every file it names intact; the caller
        deletes the superseded files only after writing the new manifest. Deterministic, so a rerun that finalises
        again writes the same files."""
        new_ids = pc.take(self.listing.ids, pa.array(self.plan))
        superseded: list[str] = []
        for shard in list(m.shards):
            if shard.segment >= seg.index:
                continue
            path = self.root / shard.path
            ids = pq.read_table(path, columns=["id"]).column(
                "id"
            )  # cheap check first: most shards are untouched
            keep = pc.invert(pc.is_in(ids, value_set=new_ids))
            if pc.all(keep).as_py():
                continue
            table = pq.read_table(path).filter(keep)
            m.remove_shard(shard.path)
            superseded.append(shard.path)
            if table.num_rows == 0:
                continue
            name = shard_name(shard.number, seg.index)
            digest, size = write_shard_file(self.root / name, table, self.rows_per_group)
            m.add_shard(replace(shard, path=name, rows=table.num_rows, sha256=digest, bytes=size))
        new_set = set(new_ids.to_pylist())
        errors = read_errors(self.root)
        kept = [e for e in errors if int(e.get("segment", 0)) >= seg.index or e.get("id") not in new_set]
        if len(kept) != len(errors):
            write_errors(self.root, kept)
        super()._finalise(m, seg)
        return superseded


def append_shards(
    root: Path,
    spec: EmbeddingSpec,
    blocks: Iterable[Mapping[str, Any]],
    *,
    chunks: int,
    shard_rows: int = 0,
    model: Mapping[str, Any] | None = None,
    input: Mapping[str, Any] | None = None,
) -> Manifest:
    """Append `chunks` blocks of rows to the shard directory `root` as one new segment, one shard per block, written
    by `ShardWriter` and committed like an encode's chunks (the manifest is created on first use; other settings
    are refused). For embedding caches that grow by whole blocks rather than from an input listing (teacher and
    evaluation vectors). A block maps shard columns to sequences: `id`, `embedding` (`[n, D]`), optional ones.

    Shards come out while later blocks are still being computed (a generator of blocks overlaps the two), and a
    killed append keeps the shards it finished; the next append closes its segment. Returns the final manifest.
    """
    root.mkdir(parents=True, exist_ok=True)
    with directory_lock(root):
        remove_stale_temps(root)
        m = read_manifest(root)
        if m is None:
            m = Manifest.new(spec, model=dict(model or {}), input=dict(input or {}))
        else:
            check_compatible(m, spec, root=root)
        for s in m.segments:
            if not s.complete:  # a killed append: its shards are whole and stay
                s.complete, s.counts["abandoned"] = True, True
        remove_orphans(root, m)  # a killed append's unrecorded shards
        seg = SegmentInfo(
            index=len(m.segments),
            created=utc_now(),
            input_rows=0,
            listing_sha256="",
            shard_base=m.next_shard_number(),
            chunks=chunks,
            shard_rows=shard_rows,
        )
        if chunks:
            m.segments.append(seg)
        m.complete = not chunks  # every earlier segment is closed by now
        write_manifest(root, m)
    if not chunks:
        return m
    writer = ShardWriter(root, spec, SegmentCommitter(root, seg.index))
    start = k = 0
    try:
        for k, block in enumerate(blocks, 1):
            if k > chunks:
                raise ValueError(f"append_shards into {root}: more than the {chunks} blocks announced")
            columns = dict(block)
            vectors = np.asarray(columns.pop(EMBEDDING), dtype=np.float32)
            n = len(vectors)
            result = ChunkResult(seg.index, k - 1, seg.shard_base + k - 1, start, start + n)
            result.add_rows(list(range(start, start + n)), {c: list(v) for c, v in columns.items()}, vectors)
            writer.submit(result)
            start += n
    finally:
        writer.close()
    if k != chunks:
        raise ValueError(f"append_shards into {root}: {k} blocks given, {chunks} announced")
    final = read_manifest(root)
    assert final is not None
    return final
