"""Where index vectors come from: an in-memory array (tests, benchmarks, Python API) or Parquet shard directories.

Both yield float32 blocks in internal-id order together with the id-map rows of the block, so the FAISS index and
the id map are written from the same pass and cannot drift apart (docs/design-notes.md#embedding-shards).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from uniretrieve.index.idmap import IDMAP_META_COLUMNS, idmap_block


class VectorSource(Protocol):
    dim: int
    num_rows: int
    spec_settings: dict[str, Any]
    """The embedding settings (model, weight hash, prompt regime, dim ...) of the vectors; {} when unknown."""
    fingerprint: str
    """A hash that changes when the vectors change (the shard manifests' hash; a content hash for arrays)."""
    model_info: dict[str, Any]
    """How to load the model that made the vectors (Encoder.describe(): source, adapter ...); {} when unknown."""

    def blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(float32 [b, D] vectors, id-map rows of the block without `internal_id`), in order."""
        ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of the given global rows (sorted ascending)."""
        ...


@dataclass
class ArraySource:
    """An in-memory float32 matrix; ids default to the row numbers as strings."""

    vectors: np.ndarray
    ids: Sequence[str] | None = None
    spec_settings: dict[str, Any] | None = None
    extra_columns: dict[str, Sequence[Any]] | None = None
    model_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be [n, D], got shape {self.vectors.shape}")
        if self.ids is not None and len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(self.vectors)} vectors")
        self.spec_settings = dict(self.spec_settings or {"dim": self.dim})
        self.fingerprint = hashlib.sha256(memoryview(self.vectors)).hexdigest()[:16]  # no copy of the matrix

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def num_rows(self) -> int:
        return int(self.vectors.shape[0])

    def blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        for s in range(0, self.num_rows, block_rows):
            e = min(s + block_rows, self.num_rows)
            ids = [str(i) for i in range(s, e)] if self.ids is None else [str(x) for x in self.ids[s:e]]
            cols: dict[str, Any] = {"id": ids}
            for name, values in (self.extra_columns or {}).items():
                cols[name] = list(values[s:e])
            yield self.vectors[s:e], idmap_block(pa.table(cols), shard="", first_row=s)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, dtype=np.int64)]


class ShardSource:
    """Embedding shard directories (several are concatenated in the order given) read through embed/reader.py."""

    def __init__(self, dirs: str | Path | Sequence[str | Path]) -> None:
        from uniretrieve.embed.reader import open_shards

        self.dirs = [Path(d) for d in ([dirs] if isinstance(dirs, str | Path) else dirs)]
        self.shards = open_shards(self.dirs)
        self.dim = int(self.shards.dim)
        self.num_rows = int(self.shards.num_rows)
        self.spec_settings = dict(self.shards.manifest.settings)
        self.model_info = dict(self.shards.manifest.model)
        self.fingerprint = manifests_hash(self.shards.manifests)
        self._starts = np.array([s.start for s in self.shards.shards], dtype=np.int64)
        self._paths = [str(s.path.resolve()) for s in self.shards.shards]

    def blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        start = 0
        for vectors, table in self.shards.iter_vector_blocks(block_rows, columns=IDMAP_META_COLUMNS):
            shard, row = self._locate(start, len(table))
            yield vectors, idmap_block(table, shard=shard, first_row=row)
            start += len(table)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.shards.read_vectors(np.asarray(rows, dtype=np.int64))

    def _locate(self, start: int, count: int) -> tuple[pa.Array, pa.Array]:
        """Shard file and row within it for global rows [start, start + count)."""
        g = np.arange(start, start + count, dtype=np.int64)
        which = np.searchsorted(self._starts, g, side="right") - 1
        paths = pa.array(self._paths, pa.string()).take(pa.array(which))
        return paths, pa.array(g - self._starts[which], pa.int64())


def manifests_hash(manifests: Sequence[Any]) -> str:
    """sha256 over the manifests' shard lists (path, rows, file hash) and settings: changes whenever the vectors do."""
    h = hashlib.sha256()
    for m in manifests:
        h.update(json.dumps([[s.path, s.rows, s.sha256] for s in m.shards], sort_keys=True).encode())
        h.update(m.settings_hash().encode())
    return h.hexdigest()[:16]
