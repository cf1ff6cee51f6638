"""The id map: FAISS internal id → shard file, row in it, the item's id, text or image path and metadata.

A Parquet file whose row i describes internal id i (column `internal_id` makes that checkable). Written from the
same block stream that fills the index, so vectors and rows stay aligned; read back as one Arrow table that filters
(search/filters.py) and result rendering use directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uniretrieve.embed.schema import ID, OPTIONAL_COLUMNS
from uniretrieve.index.meta import IDMAP_NAME as IDMAP_NAME
from uniretrieve.io import commit_temp, temp_path

# Shard columns copied into the id map (everything but the vector).
IDMAP_META_COLUMNS = (ID, *OPTIONAL_COLUMNS)
IDMAP_SCHEMA = pa.schema(
    [
        pa.field("internal_id", pa.int64(), nullable=False),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("id", pa.string(), nullable=False),
        pa.field("modality", pa.string()),
        pa.field("text", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("source", pa.string()),
        pa.field("group_id", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("metadata", pa.string()),
        # replaced by a later row of the same id (`index add` of changed content): search skips it
        pa.field("deleted", pa.bool_(), nullable=False),
    ]
)


class IdMapError(ValueError):
    """An id map that does not match its index."""


def idmap_block(table: pa.Table, *, shard: str | pa.Array, first_row: int | pa.Array) -> pa.Table:
    """Id-map rows (without `internal_id`) for one block of shard rows; missing columns become nulls."""
    n = len(table)
    cols = {}
    cols["shard"] = pa.array([shard] * n, pa.string()) if isinstance(shard, str) else shard
    cols["row"] = (
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
        if isinstance(first_row, int)
        else first_row
    )
    for f in IDMAP_SCHEMA:
        if f.name in ("internal_id", "shard", "row"):
            continue
        if f.name == "deleted":
            cols[f.name] = pa.array(np.zeros(n, dtype=bool))
            continue
        if f.name in table.column_names:
            cols[f.name] = table.column(f.name).cast(f.type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols)


class IdMapWriter:
    """Appends blocks to `idmap.parquet` (written to a temp name; `close()` moves it into place atomically)."""

    def __init__(
        self,
        path: Path,
        *,
        start: int = 0,
        previous: pa.Table | None = None,
        delete: np.ndarray | None = None,
    ) -> None:
        """previous: the id map of the version an add starts from (carried over first); delete: its internal ids
        that the add replaces."""
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.next_id = start
        self._writer = pq.ParquetWriter(self.tmp, IDMAP_SCHEMA, compression="zstd")
        if previous is not None:  # `index add`: carry the existing rows over, then append
            if len(previous) != start:
                raise IdMapError(f"the id map has {len(previous)} rows but the index holds {start} vectors")
            self._writer.write_table(mark_deleted(previous, delete))

    def write(self, block: pa.Table) -> None:
        n = len(block)
        ids = pa.array(np.arange(self.next_id, self.next_id + n, dtype=np.int64))
        self._writer.write_table(pa.Table.from_arrays([ids, *block.columns], schema=IDMAP_SCHEMA))
        self.next_id += n

    def close(self) -> None:
        """Commit the id map, then its hit store beside it (index/hitstore.py), read back from the file."""
        from uniretrieve.index.hitstore import write_hit_store

        self._writer.close()
        commit_temp(self.tmp, self.path)
        write_hit_store(self.path.parent, read_idmap(self.path))

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def deleted_mask(table: pa.Table) -> np.ndarray:
    """Rows replaced by a later update (none in id maps of older releases, which lack the column)."""
    if "deleted" not in table.column_names:
        return np.zeros(len(table), dtype=bool)
    return table.column("deleted").to_numpy(zero_copy_only=False).astype(bool)


def mark_deleted(table: pa.Table, ids: np.ndarray | None) -> pa.Table:
    """`table` in IDMAP_SCHEMA with rows `ids` marked deleted."""
    mask = deleted_mask(table)
    if ids is not None and len(ids):
        mask[np.asarray(ids, dtype=np.int64)] = True
    cols = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in IDMAP_SCHEMA
    ]
    cols[IDMAP_SCHEMA.get_field_index("deleted")] = pa.array(mask)
    return pa.Table.from_arrays(cols, schema=IDMAP_SCHEMA)


def read_idmap(path: Path, *, columns: Sequence[str] | None = None) -> pa.Table:
    """The id map as one table (memory-maps the file); checks that row i is internal id i.

    Read through `ParquetFile`, not `pq.read_table`: the latter goes through pyarrow.dataset, whose import cost a
    search process 0.4 s and ~35 MiB of its own memory; one thread, so no CPU pool is started for a file this size;
    the allocator's freed decode buffers are handed back (benchmarks/RESULTS.md, "Searcher memory")."""
    table = pq.ParquetFile(path, memory_map=True).read(
        columns=list(columns) if columns else None, use_threads=False
    )
    pa.default_memory_pool().release_unused()
    if columns is None or "internal_id" in columns:
        ids = table.column("internal_id").to_numpy()
        if len(ids) and not np.array_equal(ids, np.arange(len(ids))):
            bad = int(np.flatnonzero(ids != np.arange(len(ids)))[0])
            raise IdMapError(
                f"{path}: row {bad} holds internal id {ids[bad]}; the id map is corrupt, rebuild the index"
            )
    return table
