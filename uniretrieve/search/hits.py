"""Search results: `HitTable` (columnar: scores, internal ids and the id-map rows of every hit, as arrays) and `Hit`
(one ranked result as a Python object, made from a HitTable row only when asked for). The rows come from the index
version's hit store (index/hitstore.py: numpy arrays, no pyarrow on the search path)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from uniretrieve.index.hitstore import HitRows, HitStore


@dataclass(slots=True)
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


# Hit fields read from id-map columns of the same name, in Hit's order (rank, score and internal_id come first, from
# the search itself).
ROW_FIELDS = tuple(f.name for f in fields(Hit))[3:]
METADATA = ROW_FIELDS.index("metadata")


def hit_columns(idmap: pa.Table) -> list[str]:
    """The id-map columns a hit needs: Hit fields holding at least one value. An all-null column (no image sizes in
    a text index, no metadata ...) is neither stored in the hit store nor taken."""
    return [c for c in ROW_FIELDS if c in idmap.column_names and idmap.column(c).null_count < len(idmap)]


@dataclass
class HitTable:
    """The hits of `nq` queries as arrays: `scores`/`ids` [nq, k] straight from the index (-1 = no hit), `rows` the
    id-map rows of the valid hits in query-major order (one numpy take per column of the hit store, done on first
    use). `hits()` turns them into `Hit` objects, the one step with per-hit Python work."""

    scores: np.ndarray
    ids: np.ndarray
    store: HitStore
    columns: list[str]
    """Id-map columns `rows` carries (the store's `hit_columns`)."""

    @cached_property
    def valid(self) -> np.ndarray:
        return self.ids >= 0

    @cached_property
    def counts(self) -> np.ndarray:
        """Hits per query (fewer than k when fewer rows exist or pass the filter)."""
        return self.valid.sum(axis=1)

    @cached_property
    def rows(self) -> HitRows:
        """Id-map rows of the valid hits, query by query, rank by rank."""
        return self.store.take(self.ids[self.valid], self.columns)

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self) -> list[list[Hit]]:
        """One list of `Hit` per query, rank 1 first: one column list per field and one `map` over them, so the
        per-hit cost is the Hit's construction alone."""
        valid = self.valid
        ranks = np.cumsum(valid, axis=1)[valid].tolist()
        scores, ids = self.scores[valid].tolist(), self.ids[valid].tolist()
        rows, m = self.rows, len(ids)
        cols = [rows.column(c) if c in self.columns else repeat(None, m) for c in ROW_FIELDS]
        if "metadata" in self.columns:
            cols[METADATA] = [_json_or_raw(x) for x in cols[METADATA]]
        flat = list(map(Hit, ranks, scores, ids, *cols))
        out, pos = [], 0
        for n in self.counts.tolist():
            out.append(flat[pos : pos + n])
            pos += n
        return out


def one_chunk(table: pa.Table) -> pa.Table:
    """The id map as one chunk per column: filters and the service's item lookups on a table of many chunks (one
    per written block) cost ~5 ms per call at 1M rows, on one chunk ~0.1 ms. Columns whose strings exceed 2 GiB
    cannot be one chunk; they stay as they are."""
    import pyarrow as pa

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
