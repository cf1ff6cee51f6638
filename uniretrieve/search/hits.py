"""Search results: `HitTable` (columnar: scores, internal ids and the id-map rows of every hit, as arrays) and `Hit`
(one ranked result as a Python object, made from a HitTable row only when asked for)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass
class Hit:
    rank: int
    score: float
    internal_id: int
    id: str
    modality: str | None = None
    text: str | None = None
    source: str | None = None
    instruction: str | None = None
    group_id: str | None = None
    width: int | None = None
    height: int | None = None
    shard: str | None = None
    row: int | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# Hit fields read from id-map columns of the same name (rank, score and internal_id come from the search itself).
ROW_FIELDS = tuple(f.name for f in fields(Hit) if f.name not in ("rank", "score", "internal_id"))


def hit_columns(idmap: pa.Table) -> list[str]:
    """The id-map columns a hit needs: Hit fields holding at least one value. An all-null column (no image sizes in
    a text index, no metadata ...) is left out of every take: each column taken costs ~10 µs per call, more than the
    rest of a single-query search's overhead."""
    return [c for c in ROW_FIELDS if c in idmap.column_names and idmap.column(c).null_count < len(idmap)]


@dataclass
class HitTable:
    """The hits of `nq` queries as arrays: `scores`/`ids` [nq, k] straight from the index (-1 = no hit), `rows` the
    id-map rows of the valid hits in query-major order (one Arrow take, done on first use). `hits()` turns them into
    `Hit` objects, the one step with per-hit Python work."""

    scores: np.ndarray
    ids: np.ndarray
    idmap: pa.Table
    columns: list[str]
    """Id-map columns `rows` carries (`hit_columns`)."""

    @cached_property
    def valid(self) -> np.ndarray:
        return self.ids >= 0

    @cached_property
    def counts(self) -> np.ndarray:
        """Hits per query (fewer than k when fewer rows exist or pass the filter)."""
        return self.valid.sum(axis=1)

    @cached_property
    def rows(self) -> pa.Table:
        """Id-map rows of the valid hits, query by query, rank by rank: a take on the one-chunk id map (a take on the
        chunked, memory-mapped one costs ~7 ms at 1M rows whatever its size, more than an IVF search)."""
        return self.idmap.select(self.columns).take(self.ids[self.valid])

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self) -> list[list[Hit]]:
        """One list of `Hit` per query, rank 1 first."""
        ids, scores = self.ids[self.valid].tolist(), self.scores[self.valid].tolist()
        rows = self.rows
        cols = {c: rows.column(c).to_pylist() for c in self.columns}
        if "metadata" in cols:
            cols["metadata"] = [_json_or_raw(m) for m in cols["metadata"]]
        names = list(cols)
        per_row = zip(*(cols[c] for c in names), strict=True)
        flat = [
            Hit(rank=0, score=s, internal_id=i, **dict(zip(names, r, strict=True)))
            for s, i, r in zip(scores, ids, per_row, strict=True)
        ]
        out, pos = [], 0
        for n in self.counts.tolist():
            q = flat[pos : pos + n]
            for rank, h in enumerate(q, start=1):
                h.rank = rank
            out.append(q)
            pos += n
        return out


def hits_of(idmap: pa.Table, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Hits of every query ([nq, k] scores and internal ids, -1 = none) from ONE id-map lookup."""
    return HitTable(scores, ids, idmap, hit_columns(idmap)).hits()


def one_chunk(table: pa.Table) -> pa.Table:
    """The id map as one chunk per column: `take` on a table of many chunks (one per written block) costs ~5 ms per
    call at 1M rows, on one chunk ~0.1 ms. Columns whose strings exceed 2 GiB cannot be one chunk; they stay as
    they are."""
    try:
        return table.combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        return table


def _json_or_raw(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}
    return obj if isinstance(obj, dict) else {"value": obj}
