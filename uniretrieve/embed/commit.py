"""Recording a written chunk: its error lines, then its shard in the manifest, under the directory lock; the last
chunk of a segment finalises it (older versions of re-encoded ids dropped, totals summed, segment marked complete).

Runs on the ShardWriter's thread, after the shard file is renamed into place, so the manifest never names a file
that is not complete.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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
    directory_lock,
    read_manifest,
    write_manifest,
)
from uniretrieve.embed.plan import Listing
from uniretrieve.embed.writer import (
    ChunkResult,
    read_errors,
    replace_chunk_errors,
    write_errors,
    write_shard_file,
)


class ChunkCommitter:
    """Records a written chunk (errors, then manifest) under the lock; the last chunk of a segment finalises it."""

    def __init__(
        self, root: Path, plan: np.ndarray, listing: Listing, segment: int, rank: int, rows_per_group: int
    ) -> None:
        self.root, self.plan, self.listing, self.segment, self.rank = root, plan, listing, segment, rank
        self.rows_per_group = rows_per_group

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
            if len(seg.done_chunks) == seg.chunks:
                self._finalise(m, seg)
            write_manifest(self.root, m)

    def _finalise(self, m: Manifest, seg: SegmentInfo) -> None:
        """Segment done: drop superseded rows (older versions of re-encoded ids) and their old error lines."""
        new_ids = pc.take(self.listing.ids, pa.array(self.plan))
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
            if table.num_rows == 0:
                m.remove_shard(shard.path)
                path.unlink()
                continue
            digest, size = write_shard_file(path, table, self.rows_per_group)
            shard.rows, shard.sha256, shard.bytes = table.num_rows, digest, size
            m.add_shard(shard)
        new_set = set(new_ids.to_pylist())
        errors = read_errors(self.root)
        kept = [e for e in errors if int(e.get("segment", 0)) >= seg.index or e.get("id") not in new_set]
        if len(kept) != len(errors):
            write_errors(self.root, kept)
        totals: Counter[str] = Counter()
        encoded = truncated = 0
        for c in seg.counts.get("chunks", {}).values():
            encoded += int(c["encoded"])
            truncated += int(c["truncated"])
            totals.update(c["skipped"])
        seg.counts.update({"encoded": encoded, "truncated": truncated, "skipped": dict(totals)})
        seg.complete = True
        m.complete = all(s.complete for s in m.segments)
