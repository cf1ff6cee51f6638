"""The Arrow schema of an embedding shard, its key-value metadata, and building a shard table from columns.

One row holds a vector and everything about it (id, source, text, hashes, user metadata), so ids and vectors can
never drift apart the way clip-retrieval's `.npy` + metadata Parquet pairs do
(docs/design-notes.md#embedding-shards).
The vector column is `fixed_size_list<float16|float32>[D]` (a `list<float>` column overflows past 2^31 child values;
Parquet has a FLOAT16 type: docs/design-notes.md#embedding-shards).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from uniretrieve._version import __version__

SCHEMA_VERSION = 1
FORMAT_NAME = "uniretrieve-embeddings"
META_PREFIX = "uniretrieve."
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}

# Columns every shard has, in order. `embedding` is filled separately (its type depends on dim and dtype).
ID, EMBEDDING = "id", "embedding"
OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "modality": pa.string(),  # "text" | "image" | "image_text"
    "text": pa.string(),
    "instruction": pa.string(),
    "source": pa.string(),  # image path (relative to the input root) or "file:row"
    "group_id": pa.string(),  # ties an image to its captions
    "content_hash": pa.string(),  # hex sha256 of the bytes/text and instruction (data/corpus.py content_hash)
    "width": pa.int32(),
    "height": pa.int32(),
    "metadata": pa.string(),  # the user's other columns, as one JSON object
}
COLUMNS = (ID, EMBEDDING, *OPTIONAL_COLUMNS)


@dataclass(frozen=True)
class EmbeddingSpec:
    """What the vectors of a shard directory are: everything that must match for two shards to be mixed.

    `extra` holds further settings that change the vectors or the rows (adapter, chat wrapper, corpus columns ...);
    it takes part in `settings_hash` like the named fields.
    """

    dim: int
    dtype: str = "float16"
    model_id: str = ""
    weight_hash: str = ""
    family: str = ""
    prompt_regime: str = ""
    instruction: str | None = None
    normalized: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (the input of `settings_hash`)."""
        return {
            "dim": self.dim,
            "dtype": self.dtype,
            "model_id": self.model_id,
            "weight_hash": self.weight_hash,
            "family": self.family,
            "prompt_regime": self.prompt_regime,
            "instruction": self.instruction,
            "normalized": self.normalized,
            **{k: self.extra[k] for k in sorted(self.extra)},
        }

    def settings_hash(self) -> str:
        return settings_hash(self.settings())

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EmbeddingSpec:
        named = {
            "dim",
            "dtype",
            "model_id",
            "weight_hash",
            "family",
            "prompt_regime",
            "instruction",
            "normalized",
        }
        return cls(
            **{k: settings[k] for k in named if k in settings},
            extra={k: v for k, v in settings.items() if k not in named},
        )

    def arrow_schema(self) -> pa.Schema:
        """The shard schema with the spec in its key-value metadata (readable without uniretrieve)."""
        fields = [
            pa.field(ID, pa.string(), nullable=False),
            pa.field(EMBEDDING, pa.list_(pa.field("element", DTYPES[self.dtype]), self.dim), nullable=False),
            *(pa.field(name, typ) for name, typ in OPTIONAL_COLUMNS.items()),
        ]
        return pa.schema(fields, metadata=self.schema_metadata())

    def schema_metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT_NAME,
            "schema_version": str(SCHEMA_VERSION),
            "uniretrieve_version": __version__,
            "settings_hash": self.settings_hash(),
            "settings": json.dumps(self.settings(), sort_keys=True),
            "dim": str(self.dim),
            "dtype": self.dtype,
            "normalized": json.dumps(self.normalized),
            "metric": "ip",
            "model_id": self.model_id,
            "weight_hash": self.weight_hash,
            "family": self.family,
            "prompt_regime": self.prompt_regime,
            "instruction": self.instruction or "",
        }
        return {META_PREFIX + k: v for k, v in meta.items()}


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Stable short hash of a settings dict (canonical JSON, sha256, first 16 hex digits)."""
    blob = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_schema_metadata(schema: pa.Schema) -> dict[str, str]:
    """The `uniretrieve.*` key-values of a shard schema, prefix removed."""
    raw = schema.metadata or {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX) :]] = v.decode() if isinstance(v, bytes) else v
    return out


def vectors_to_arrow(vectors: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    """`[n, D]` array → `fixed_size_list<dtype>[D]`, without a Python object per row."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D [n, D], got shape {vectors.shape}")
    flat = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=DTYPES[dtype]), vectors.shape[1])


def arrow_to_vectors(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """`fixed_size_list<float>[D]` column → float32 `[n, D]` (flatten() honours slice offsets)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) for c in chunks]
    if not parts:
        return np.empty((0, dim), dtype=np.float32)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out.astype(np.float32, copy=False)


def build_table(spec: EmbeddingSpec, columns: Mapping[str, Any] | pa.Table) -> pa.Table:
    """A shard table in the spec's schema from `id`, `embedding` (`[n, D]` array) and any optional columns.

    Missing optional columns become nulls; unknown columns are refused. Vectors must be finite: a NaN row is named,
    since it would silently poison every inner-product search.
    """
    schema = spec.arrow_schema()
    if isinstance(columns, pa.Table):
        columns = {name: columns.column(name) for name in columns.column_names}
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown shard columns {sorted(unknown)}; put user fields into 'metadata' (JSON)")
    if ID not in columns or EMBEDDING not in columns:
        raise ValueError("a shard needs 'id' and 'embedding' columns")
    emb = columns[EMBEDDING]
    if isinstance(emb, pa.ChunkedArray | pa.Array):
        vectors = arrow_to_vectors(emb, spec.dim)
    else:
        vectors = np.asarray(emb)
    if vectors.ndim != 2 or vectors.shape[1] != spec.dim:
        raise ValueError(f"embedding must have shape [n, {spec.dim}], got {vectors.shape}")
    bad = ~np.isfinite(vectors).all(axis=1)
    n = vectors.shape[0]
    ids = (
        pa.array(columns[ID], type=pa.string())
        if not isinstance(columns[ID], pa.ChunkedArray)
        else columns[ID]
    )
    if len(ids) != n:
        raise ValueError(f"'id' has {len(ids)} rows but 'embedding' has {n}")
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"embedding of id {ids[row].as_py()!r} (row {row}) is not finite")
    if ids.null_count:
        raise ValueError("'id' must not contain nulls")
    arrays: list[Any] = [ids, vectors_to_arrow(vectors, spec.dtype)]
    for name, typ in OPTIONAL_COLUMNS.items():
        if name in columns and columns[name] is not None:
            col = columns[name]
            arr = col.cast(typ) if isinstance(col, pa.Array | pa.ChunkedArray) else pa.array(col, type=typ)
            if len(arr) != n:
                raise ValueError(f"column {name!r} has {len(arr)} rows, expected {n}")
            arrays.append(arr)
        else:
            arrays.append(pa.nulls(n, type=typ))
    return pa.Table.from_arrays(arrays, schema=schema)


def row_group_rows(dim: int, dtype: str, target_bytes: int = 32 << 20) -> int:
    """Rows per Parquet row group: ~32 MiB of vectors, between 1,024 and 65,536 rows, so a reader streams a shard
    in bounded pieces (the reference suggests ≤16k rows at 4096-d fp16; this gives 4,096)."""
    per_row = dim * np.dtype(dtype).itemsize
    return int(min(65536, max(1024, target_bytes // per_row)))
