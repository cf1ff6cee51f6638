"""The hit store: the id-map columns a search hit carries, as numpy arrays memory-mapped from a version's `hits/`.

A search answers with ~10 id-map rows per query. As an Arrow take on the id map decoded from Parquet this cost
~35 µs a single query when it alternated with an HNSW search (each evicting the other's cache lines and code); a
numpy take on fixed-width arrays costs 7–13 µs (docs/design-notes.md#the-hit-store). Memory-mapped,
the arrays cost a search process only the pages its hits touch, and searching needs no pyarrow at all (its libraries
are ~36 MiB of a process's memory, and pandas, which pyarrow imports on its first conversion, ~50 MiB more); the
Parquet id map is read only for filters and the service's item pages.

    hits/hits.json              {"format": "uniretrieve-hits", "rows": N, "idmap_columns": [...], "columns": {...}}
    hits/<col>.npy              "int" / "bool": one value per row
    hits/<col>.npy              "fixed": bytes of width w (UTF-8, NUL-free, short strings such as ids)
    hits/<col>.codes.npy        "dict": int32 codes into the manifest's values, -1 = null (few distinct strings)
    hits/<col>.offsets.npy      "var": int64 [N + 1] offsets into <col>.data.npy (uint8), long strings (texts)
    hits/<col>.valid.npy        present when the column has nulls
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.meta import IndexMetaError

HITS_DIR = "hits"
MANIFEST = "hits.json"
FORMAT = "uniretrieve-hits"
FIXED_MAX_BYTES = 64
"""Longer strings are stored with offsets (a caption padded to the longest one would waste most of its bytes)."""


class HitStoreError(IndexMetaError):
    """A hit store that does not match its id map."""


@dataclass
class Column:
    kind: str
    """"int", "bool", "fixed", "dict" or "var"."""
    values: np.ndarray
    """int / bool / fixed: the values; dict: the codes; var: the offsets."""
    valid: np.ndarray | None = None
    data: np.ndarray | None = None
    """var: the UTF-8 bytes."""
    labels: list[str] | None = None
    """dict: the distinct strings."""

    def take(self, ids: np.ndarray) -> Taken:
        valid = None if self.valid is None else self.valid[ids]
        if self.kind != "var":
            return Taken(self, self.values[ids], valid)
        start, end = self.values[ids], self.values[ids + 1]
        lengths = end - start
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # one gather of every byte of the taken strings: no Python loop over rows
        where = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Taken(self, offsets, valid, self.data[where])


@dataclass
class Taken:
    """One column's values at the taken rows, still as arrays (`to_pylist` makes the Python values)."""

    column: Column
    values: np.ndarray
    valid: np.ndarray | None
    data: np.ndarray | None = None

    def to_pylist(self) -> list[Any]:
        kind = self.column.kind
        if kind == "fixed":
            out: list[Any] = [b.decode() for b in self.values.tolist()]
        elif kind == "dict":
            labels = self.column.labels or []
            out = [labels[c] if c >= 0 else None for c in self.values.tolist()]
        elif kind == "var":
            text, offs = bytes(self.data), self.values.tolist()
            out = [text[a:b].decode() for a, b in pairwise(offs)]
        else:
            out = self.values.tolist()
        if self.valid is not None:
            out = [v if ok else None for v, ok in zip(out, self.valid.tolist(), strict=True)]
        return out


@dataclass
class HitRows:
    """The hit columns of the taken rows (query-major, rank by rank), as arrays."""

    num_rows: int
    columns: dict[str, Taken]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str) -> list[Any]:
        return self.columns[name].to_pylist()

    def to_pylist(self) -> list[dict[str, Any]]:
        cols = {name: self.column(name) for name in self.columns}
        return [{name: cols[name][i] for name in cols} for i in range(self.num_rows)]


@dataclass
class HitStore:
    rows: int
    idmap_columns: list[str]
    """Every column of the id map (what filters can name), whether stored here or not."""
    columns: dict[str, Column]
    deleted: np.ndarray | None
    """Rows replaced by an update (None: none)."""

    @property
    def hit_columns(self) -> list[str]:
        return list(self.columns)

    def take(self, ids: np.ndarray, names: Sequence[str]) -> HitRows:
        ids = np.asarray(ids, dtype=np.int64)
        return HitRows(len(ids), {n: self.columns[n].take(ids) for n in names})

    @classmethod
    def open(cls, version_dir: Path) -> HitStore | None:
        """The store of an index version, memory-mapped; None for versions written before it existed."""
        d = Path(version_dir) / HITS_DIR
        try:
            man = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HitStoreError(f"cannot read {d / MANIFEST} ({exc}); rebuild the index") from None
        if man.get("format") != FORMAT:
            raise HitStoreError(f"{d / MANIFEST} is not a hit store; rebuild the index")

        def load(name: str) -> np.ndarray:
            try:
                # A plain ndarray view of the mapping: np.memmap's Python-level __getitem__ / __array_finalize__
                # cost ~3 µs per fancy index, ~8× the gather itself for a query's 10 rows.
                return np.load(d / name, mmap_mode="r").view(np.ndarray)
            except (OSError, ValueError) as exc:
                raise HitStoreError(f"cannot read {d / name} ({exc}); rebuild the index") from None

        cols = {}
        for name, spec in man["columns"].items():
            kind = spec["kind"]
            main = (
                f"{name}.codes.npy"
                if kind == "dict"
                else f"{name}.offsets.npy"
                if kind == "var"
                else f"{name}.npy"
            )
            cols[name] = Column(
                kind,
                load(main),
                load(f"{name}.valid.npy") if spec.get("nulls") else None,
                load(f"{name}.data.npy") if kind == "var" else None,
                spec.get("labels"),
            )
        store = cls(int(man["rows"]), list(man["idmap_columns"]), cols, None)
        if man.get("deleted"):
            store.deleted = load("deleted.npy")
        for name, col in cols.items():
            n = len(col.values) - (col.kind == "var")
            if n != store.rows:
                raise HitStoreError(
                    f"{d}: column {name} holds {n} rows, {MANIFEST} says {store.rows}; rebuild the index"
                )
        return store

    @classmethod
    def from_table(cls, table: Any) -> HitStore:
        """The same store in memory, from an Arrow id map (versions without `hits/`, tests)."""
        from uniretrieve.index.idmap import deleted_mask  # imports pyarrow: only here, not on the search path
        from uniretrieve.search.hits import hit_columns

        cols = {name: encode_column(table.column(name)) for name in hit_columns(table)}
        dead = deleted_mask(table)
        return cls(len(table), list(table.column_names), cols, dead if dead.any() else None)


def encode_column(col: Any) -> Column:
    """An Arrow column → its hit-store encoding (vectorised: no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        kind = "bool" if pa.types.is_boolean(t) else "int"
        filled = pc.fill_null(col, False if kind == "bool" else 0) if col.null_count else col
        return Column(kind, np.asarray(filled.to_numpy(zero_copy_only=False)), valid)
    if not pa.types.is_string(t) and not pa.types.is_large_string(t):
        raise HitStoreError(f"id-map column of type {t} cannot be stored")
    encoded = col.dictionary_encode()
    labels = encoded.dictionary.to_pylist()
    if len(labels) <= max(1, n // 16):
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        return Column("dict", codes, valid, labels=labels)
    large = col.cast(pa.large_string())
    if large.null_count:
        large = pc.fill_null(large, "")
    bufs = large.buffers()
    offsets = np.frombuffer(bufs[1], np.int64, n + 1, large.offset * 8)
    data = (
        np.frombuffer(bufs[2], np.uint8)[offsets[0] : offsets[-1]]
        if bufs[2] is not None
        else np.zeros(0, np.uint8)
    )
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    width = int(lengths.max()) if n else 0
    if 0 < width <= FIXED_MAX_BYTES and not (data == 0).any():
        fixed = np.zeros((n, width), np.uint8)
        rows = np.repeat(np.arange(n), lengths)
        fixed[rows, np.arange(len(data)) - offsets[:-1][rows]] = data
        return Column("fixed", fixed.view(f"S{width}").reshape(n), valid)
    return Column("var", offsets.copy(), valid, data=data.copy())


def write_hit_store(version_dir: Path, table: Any) -> Path:
    """Write `version_dir/hits/` for the id map `table` (atomically: a complete folder or none)."""
    from uniretrieve.index.idmap import deleted_mask
    from uniretrieve.io import atomic_dir
    from uniretrieve.search.hits import hit_columns

    out = Path(version_dir) / HITS_DIR
    man: dict[str, Any] = {"format": FORMAT, "rows": len(table), "idmap_columns": list(table.column_names)}
    specs: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        for name in hit_columns(table):
            col = encode_column(table.column(name))
            main = (
                f"{name}.codes.npy"
                if col.kind == "dict"
                else f"{name}.offsets.npy"
                if col.kind == "var"
                else f"{name}.npy"
            )
            np.save(tmp / main, col.values)
            if col.valid is not None:
                np.save(tmp / f"{name}.valid.npy", col.valid)
            if col.data is not None:
                np.save(tmp / f"{name}.data.npy", col.data)
            specs[name] = {"kind": col.kind, "nulls": col.valid is not None} | (
                {"labels": col.labels} if col.labels is not None else {}
            )
        dead = deleted_mask(table)
        if dead.any():
            np.save(tmp / "deleted.npy", dead)
        man |= {"columns": specs, "deleted": bool(dead.any())}
        (tmp / MANIFEST).write_text(
            json.dumps(man, indent=1), encoding="utf-8"
        )  # the folder is the atomic unit
    return out
