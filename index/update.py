"""What an `index add` does with each new row: append it, skip it, replace an old row with it, or refuse the add.

Rows are matched by their `id` and `content_hash` (shard columns, kept in the id map). A row whose id and content
hash are in the index already is skipped; a row whose id is there with other content is an update when it comes
from the same corpus (shard directory) as the old row: the old row is marked deleted in the id map (a tombstone
that search skips; FAISS's `remove_ids` would renumber a flat index and HNSW has none) and the new vector appended.
The same id from a different corpus is a collision, and the whole add is refused naming it: ids must name one item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from uniretrieve.index.idmap import deleted_mask
from uniretrieve.index.meta import IndexMetaError
from uniretrieve.index.source import VectorSource

MAX_NAMED = 5


class IdCollisionError(IndexMetaError):
    """New rows whose ids are taken by other items (another corpus) in the index."""


@dataclass
class AddPlan:
    keep: np.ndarray
    """bool per row of the new source: appended to the index."""
    replace: np.ndarray
    """Internal ids of old rows that an appended row updates (marked deleted)."""
    skipped: int = 0
    updated: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return int(self.keep.sum())


def corpus_of(shard: str | None) -> str:
    """The corpus of a row: the shard directory its vector was read from ("" for in-memory arrays)."""
    return str(Path(shard).parent) if shard else ""


def plan_add(idmap: pa.Table, source: VectorSource, block_rows: int) -> AddPlan:
    """Match the new rows against the live rows of `idmap`; raises IdCollisionError naming colliding ids."""
    live = ~deleted_mask(idmap)
    cols = idmap.select(["internal_id", "id", "content_hash", "shard"]).filter(pa.array(live)).to_pydict()
    old: dict[str, tuple[int, Any, str]] = {
        i: (iid, h, corpus_of(s))
        for iid, i, h, s in zip(
            cols["internal_id"], cols["id"], cols["content_hash"], cols["shard"], strict=True
        )
    }
    keep = np.ones(source.num_rows, dtype=bool)
    replace: list[int] = []
    updated: list[str] = []
    collisions: list[tuple[str, str, str]] = []
    new_corpus: dict[str, str] = {}
    pos = 0
    for _, rows in source.blocks(block_rows):
        b = rows.select(["id", "content_hash", "shard"]).to_pydict()
        for j, (i, h, s) in enumerate(zip(b["id"], b["content_hash"], b["shard"], strict=True)):
            corpus = corpus_of(s)
            if new_corpus.setdefault(i, corpus) != corpus:
                collisions.append((i, new_corpus[i], corpus))
            hit = old.get(i)
            if hit is None:
                continue
            iid, old_hash, old_corpus = hit
            if h is not None and h == old_hash:
                keep[pos + j] = False
            elif old_corpus == corpus:
                replace.append(iid)
                updated.append(i)
            else:
                collisions.append((i, old_corpus, corpus))
        pos += len(rows)
    if collisions:
        raise IdCollisionError(collision_message(collisions))
    return AddPlan(keep, np.asarray(replace, dtype=np.int64), int((~keep).sum()), updated)


def collision_message(collisions: list[tuple[str, str, str]]) -> str:
    named = ", ".join(
        f"{i!r} ({a or 'an array'} and {b or 'an array'})" for i, a, b in collisions[:MAX_NAMED]
    )
    more = f" and {len(collisions) - MAX_NAMED} more" if len(collisions) > MAX_NAMED else ""
    return (
        f"{len(collisions)} id(s) of the new rows are taken by other items in the index: {named}{more}; "
        f"nothing was added. Give the corpora distinct ids, or build a separate index for each"
    )
