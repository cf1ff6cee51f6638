"""`manifest.json`: the index of a shard directory — what the vectors are, and which shards hold which input rows.

Written atomically (temp file, fsync, rename) after every shard, under an exclusive lock so that several ranks of
one job can update it. Global row order = shard order in the manifest = ascending shard file name.

Positions: a directory grows in *segments*. Segment 0 is the first run over the input; a later run over a changed
input (files added or changed) opens a new segment that encodes only rows whose (id, content hash) is not yet
stored. `input_start`/`input_end` of a shard are positions in the sorted input listing of its own segment.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from uniretrieve._version import __version__
from uniretrieve.embed.schema import FORMAT_NAME, SCHEMA_VERSION, EmbeddingSpec, settings_hash
from uniretrieve.io import atomic_write_json, file_lock

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".uniretrieve.lock"


class ManifestError(ValueError):
    """A missing, unreadable or inconsistent manifest; the message names the file and what to do."""


class SettingsMismatchError(ManifestError):
    """An existing directory was made with other settings than the ones asked for now."""


@dataclass
class ShardInfo:
    """One shard file. `path` is relative to the directory; rows [input_start, input_end) of its segment's input."""

    path: str
    rows: int
    input_start: int
    input_end: int
    sha256: str
    rank: int = 0
    segment: int = 0
    number: int = 0
    """Global shard number (the digits of the file name)."""
    bytes: int = 0


@dataclass
class SegmentInfo:
    """One run over the input (the first encode, or an incremental update)."""

    index: int
    created: str
    input_rows: int
    """Rows in the whole input listing of this run."""
    listing_sha256: str
    shard_base: int
    """Shard number of this segment's chunk 0; chunk k of the segment is shard `shard_base + k`."""
    chunks: int
    shard_rows: int
    world_size: int = 1
    planned_rows: int = 0
    """Rows of the listing this segment encodes (all for segment 0; added or changed ones later)."""
    done_chunks: list[int] = field(default_factory=list)
    complete: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    dim: int
    dtype: str
    model_id: str
    weight_hash: str
    family: str
    prompt_regime: str
    instruction: str | None
    normalized: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    total_rows: int = 0
    complete: bool = False
    created: str = ""
    updated: str = ""
    uniretrieve_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME
    metric: str = "ip"

    @classmethod
    def new(
        cls, spec: EmbeddingSpec, *, model: dict[str, Any] | None = None, input: dict[str, Any] | None = None
    ) -> Manifest:
        now = utc_now()
        return cls(
            dim=spec.dim,
            dtype=spec.dtype,
            model_id=spec.model_id,
            weight_hash=spec.weight_hash,
            family=spec.family,
            prompt_regime=spec.prompt_regime,
            instruction=spec.instruction,
            normalized=spec.normalized,
            settings=spec.settings(),
            model=dict(model or {}),
            input=dict(input or {}),
            created=now,
            updated=now,
        )

    def spec(self) -> EmbeddingSpec:
        return EmbeddingSpec.from_settings(self.settings)

    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    def add_shard(self, info: ShardInfo) -> None:
        """Insert or replace (same path) a shard, keeping name order, and recount rows."""
        self.shards = [s for s in self.shards if s.path != info.path] + [info]
        self.shards.sort(key=lambda s: s.path)
        self.total_rows = sum(s.rows for s in self.shards)

    def next_shard_number(self) -> int:
        """The number of a new segment's first shard: past every shard written and every chunk reserved."""
        base = max((s.number for s in self.shards), default=-1) + 1
        return max([base] + [seg.shard_base + seg.chunks for seg in self.segments])

    def remove_shard(self, path: str) -> None:
        self.shards = [s for s in self.shards if s.path != path]
        self.total_rows = sum(s.rows for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["settings_hash"] = self.settings_hash()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = MANIFEST_NAME) -> Manifest:
        if d.get("format") != FORMAT_NAME:
            raise ManifestError(
                f"{where} is not a uniretrieve embedding manifest (format={d.get('format')!r})"
            )
        if int(d.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ManifestError(
                f"{where} has schema_version {d['schema_version']}, newer than this uniretrieve understands "
                f"({SCHEMA_VERSION}); upgrade uniretrieve"
            )
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["shards"] = [_build(ShardInfo, s) for s in d.get("shards", [])]
        kw["segments"] = [_build(SegmentInfo, s) for s in d.get("segments", [])]
        try:
            m = cls(**kw)
        except TypeError as exc:
            raise ManifestError(f"{where} is missing fields: {exc}") from exc
        stored = d.get("settings_hash")
        if stored is not None and stored != m.settings_hash():
            raise ManifestError(
                f"{where}: settings_hash does not match its settings (the file was edited by hand?)"
            )
        return m


def _build(cls: type, d: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_path(root: str | Path) -> Path:
    p = Path(root)
    return p if p.name == MANIFEST_NAME else p / MANIFEST_NAME


def read_manifest(root: str | Path) -> Manifest | None:
    """The manifest of a directory, or None when it has none."""
    path = manifest_path(root)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}; restore it or re-encode with --overwrite") from exc
    m = Manifest.from_dict(data, where=str(path))
    for s in m.shards:
        check_contained(s.path, where=path)
    return m


def check_contained(name: str, *, where: Path) -> None:
    """Refuse a shard path that would leave the directory (absolute, `..`, or a drive): a tampered manifest must not
    make a run read, replace or delete files elsewhere."""
    p = PurePosixPath(name.replace("\\", "/"))
    if not p.parts or p.is_absolute() or ".." in p.parts or ":" in name:
        raise ManifestError(
            f"{where} names shard path {name!r}, which is outside its directory; the manifest was edited or "
            "corrupted — restore it, or re-encode with --overwrite"
        )


def write_manifest(root: str | Path, manifest: Manifest) -> None:
    manifest.updated = utc_now()
    atomic_write_json(manifest_path(root), manifest.to_dict())


@contextlib.contextmanager
def directory_lock(root: str | Path) -> Iterator[None]:
    """Exclusive lock over a shard directory's manifest (flock; ranks of one job on one or several hosts sharing
    a file system with working flock — local disks, NFSv4, Lustre mounted with `flock`)."""
    with file_lock(Path(root) / LOCK_NAME):
        yield


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts (empty when compatible)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} (directory) vs {new.get(key)!r} (now)")
    return out


def check_compatible(manifest: Manifest, spec: EmbeddingSpec, *, root: str | Path) -> None:
    """Refuse to add vectors made with other settings to a directory."""
    diff = settings_diff(manifest.settings, spec.settings())
    if diff:
        raise SettingsMismatchError(
            f"{root} holds embeddings made with other settings:\n  "
            + "\n  ".join(diff)
            + "\nUse another output directory, or --overwrite to replace its contents."
        )
