"""Bringing a shard directory back in line with its manifest when a run starts (under the directory lock).

Two things can be out of line after a crash or a damaged disk:

* files the manifest does not name: a rewrite or a superseded shard left by a finalise killed around its manifest
  switch. They are deleted — except the shards of chunks an open segment reserved, which may be a finished chunk
  not yet recorded, or one another rank is renaming into place right now.
* shards the manifest names that are missing or no longer what it recorded (size and row count always; sha256 when
  asked, or when the directory is small enough to hash in a moment). They are dropped from the manifest so the run
  encodes exactly their rows again: a chunk of the open segment is redone under its own name, rows of a finished
  segment are planned again like any row not stored.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from uniretrieve.embed.manifest import Manifest, ShardInfo, write_manifest
from uniretrieve.embed.reader import file_sha256
from uniretrieve.embed.writer import parse_shard_name

log = logging.getLogger("uniretrieve.encode")

CHEAP_HASH_BYTES = 64 << 20
"""Directories whose shards total at most this many bytes are re-hashed on every resume (a fraction of a second)."""


@dataclass(frozen=True)
class Damage:
    shard: ShardInfo
    reason: str


def remove_orphans(root: Path, manifest: Manifest) -> list[str]:
    """Delete shard files of ours that the manifest does not name and no open segment may still record."""
    listed = {s.path for s in manifest.shards}
    reserved = {
        seg.shard_base + k
        for seg in manifest.segments
        if not seg.complete
        for k in range(seg.chunks)
        if k not in seg.done_chunks
    }
    removed = []
    for p in sorted(root.iterdir()):
        parsed = parse_shard_name(p.name)
        if parsed is None or p.name in listed or not p.is_file():
            continue
        number, revision = parsed
        if revision == 0 and number in reserved:
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p.name)
    return removed


def find_damage(root: Path, manifest: Manifest, *, checksums: bool | None = None) -> list[Damage]:
    """Shards that are missing, or whose size, row count or (when `checksums`; None: when cheap) sha256 differs
    from the manifest."""
    if checksums is None:
        checksums = sum(s.bytes for s in manifest.shards) <= CHEAP_HASH_BYTES
    out = []
    for s in manifest.shards:
        reason = _damage(root / s.path, s, checksums)
        if reason:
            out.append(Damage(s, reason))
    return out


def _damage(path: Path, s: ShardInfo, checksums: bool) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if s.bytes and size != s.bytes:
        return f"{size} bytes, the manifest says {s.bytes}"
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable ({exc})"
    if rows != s.rows:
        return f"{rows} rows, the manifest says {s.rows}"
    if checksums and s.sha256 and file_sha256(path) != s.sha256:
        return "sha256 differs from the manifest"
    return None


def drop_damaged(root: Path, manifest: Manifest, damage: list[Damage]) -> None:
    """Forget damaged shards so their rows are encoded again (the caller writes the manifest, then `unlink_all`)."""
    by_index = {seg.index: seg for seg in manifest.segments}
    for d in damage:
        log.warning("shard %s is damaged (%s); its rows are encoded again", root / d.shard.path, d.reason)
        manifest.remove_shard(d.shard.path)
        seg = by_index.get(d.shard.segment)
        if seg is None or seg.complete:
            continue  # a finished segment's rows: no longer stored, so planned again
        chunk = d.shard.number - seg.shard_base
        seg.done_chunks = [k for k in seg.done_chunks if k != chunk]
        seg.counts.get("chunks", {}).pop(str(chunk), None)


def unlink_all(root: Path, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()


def reconcile(root: Path, manifest: Manifest, *, checksums: bool | None) -> list[str]:
    """Make the directory agree with its manifest before planning: orphans deleted, damaged shards forgotten (and
    deleted) so that their rows are encoded again. Returns the damaged shards' names."""
    remove_orphans(root, manifest)
    damage = find_damage(root, manifest, checksums=checksums)
    if damage:
        drop_damaged(root, manifest, damage)
        write_manifest(root, manifest)
        unlink_all(root, [d.shard.path for d in damage])
    return [d.shard.path for d in damage]
