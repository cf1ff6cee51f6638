"""Work batches: the rows of this rank's chunks streamed from the corpus, cut into model batches, and prepared
(image decode + processor) in DataLoader workers.

The main process streams records (`work_batches`) and hands each `WorkBatch` to the DataLoader as a sampler
element (`uniretrieve.models.batching.prepare_ahead`); a worker turns it into a `LoadedBatch` (`PrepareBatch`). The loader returns batches in
submission order, so a chunk's batches arrive together, the last one flagged `last`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniretrieve.data.corpus import Corpus, CorpusError, Record, with_hash
from uniretrieve.embed.manifest import SegmentInfo
from uniretrieve.embed.plan import Listing, chunk_bounds
from uniretrieve.models.images import ImageLoadError, load_image
from uniretrieve.types import Item


@dataclass
class WorkBatch:
    segment: int
    chunk: int
    records: list[Record]
    last: bool


@dataclass
class LoadedBatch:
    segment: int
    chunk: int
    last: bool
    records: list[Record] = field(default_factory=list)
    """Records that made it into `prepared`, in its row order."""
    sizes: list[tuple[int | None, int | None]] = field(default_factory=list)
    prepared: Any = None
    errors: list[tuple[Record, str]] = field(default_factory=list)
    seen: int = 0


def work_batches(
    corpus: Corpus,
    listing: Listing,
    plan: np.ndarray,
    segment: SegmentInfo,
    chunks: list[int],
    batch_size: int,
    image_batch_size: int,
) -> Iterator[WorkBatch]:
    """Batches of the records of `chunks` (chunk order), texts and images apart, texts longest first."""
    mine = set(chunks)
    S = segment.shard_rows
    ids = listing.ids
    current, buf = -1, []
    emitted: set[int] = set()
    ptr = 0

    def changed(detail: str) -> CorpusError:
        return CorpusError(
            f"{corpus.path} changed while encoding ({detail}); re-run the command to plan again"
        )

    def flush() -> Iterator[WorkBatch]:
        start, end = chunk_bounds(segment, current)
        if len(buf) != end - start:  # never commit a chunk with a gap
            raise changed(f"chunk {current} has {len(buf)} of its {end - start} rows")
        emitted.add(current)
        yield from _split(segment.index, current, buf, batch_size, image_batch_size)

    for rec in corpus.records(hash_content=False):
        # `plan` is sorted and records come in position order: walk both together
        while ptr < len(plan) and plan[ptr] < rec.position:
            ptr += 1
        if ptr >= len(plan):
            break
        if plan[ptr] != rec.position:
            continue
        k = ptr // S
        if k not in mine:
            continue
        if rec.id != ids[rec.position].as_py():
            raise changed(f"row {rec.position} is now {rec.id!r}, was {ids[rec.position].as_py()!r}")
        if k != current and buf:
            yield from flush()
            buf = []
        current = k
        buf.append(rec)
    if buf:
        yield from flush()
    if emitted != mine:
        raise changed(f"rows of chunk(s) {sorted(mine - emitted)[:5]} are gone")


def _split(
    segment: int, chunk: int, records: list[Record], batch_size: int, image_bs: int
) -> Iterator[WorkBatch]:
    bad = [r for r in records if r.error is not None]
    texts = sorted(
        (r for r in records if r.error is None and r.image is None), key=lambda r: -len(r.text or "")
    )
    images = sorted(
        (r for r in records if r.error is None and r.image is not None), key=lambda r: -len(r.text or "")
    )
    groups: list[list[Record]] = []
    for rows, bs in ((texts, batch_size), (images, image_bs)):
        groups.extend(rows[i : i + bs] for i in range(0, len(rows), bs))
    if bad or not groups:
        groups.append(bad)
    for i, g in enumerate(groups):
        yield WorkBatch(segment, chunk, g, last=i == len(groups) - 1)


class PrepareBatch:
    """`WorkBatch` → `LoadedBatch`: decodes images and runs the InputBuilder (in a worker). Picklable."""

    def __init__(self, input_builder: Any) -> None:
        self.input_builder = input_builder

    def __call__(self, work: WorkBatch) -> LoadedBatch:
        out = LoadedBatch(work.segment, work.chunk, work.last, seen=len(work.records))
        items: list[Item] = []
        for rec in work.records:
            # hash here, not from the listing: if the file changed since the listing, the stored hash is that of
            # the bytes embedded, so a later run sees the row as up to date, never as current when it is not
            rec = with_hash(rec)
            if rec.error is not None:
                out.errors.append((rec, rec.error))
                continue
            if rec.image is not None:
                try:
                    im = load_image(rec.image)
                except ImageLoadError as exc:
                    out.errors.append((rec, f"image: {exc.reason}"))
                    continue
                items.append(Item(text=rec.text, image=im, instruction=rec.instruction))
                out.sizes.append(im.size)
            else:
                items.append(Item(text=rec.text, instruction=rec.instruction))
                out.sizes.append((None, None))
            out.records.append(rec)
        if items:
            try:
                out.prepared = self.input_builder(items)
            except Exception:
                self._isolate(out, items)
        return out

    def _isolate(self, out: LoadedBatch, items: list[Item]) -> None:
        """The processor failed on the batch: find the item(s) it fails on, report them, prepare the rest."""
        keep = []
        for i, (rec, item) in enumerate(zip(out.records, items, strict=True)):
            try:
                self.input_builder([item])
                keep.append(i)
            except Exception as exc:
                out.errors.append((rec, f"preprocessing failed: {type(exc).__name__}: {exc}"))
        out.records = [out.records[i] for i in keep]
        out.sizes = [out.sizes[i] for i in keep]
        out.prepared = self.input_builder([items[i] for i in keep]) if keep else None


def error_kind(reason: str) -> str:
    """A short class of a skip reason for summaries (errors.jsonl keeps the full reason)."""
    r = reason.lower()
    for needle, kind in (
        ("pixel cap", "image too large"),
        ("empty file", "empty file"),
        ("no such file", "missing file"),
        ("not found", "missing file"),
        ("unsupported", "unsupported format"),
        ("utf-8", "not UTF-8"),
        ("empty text", "empty text"),
        ("json", "bad JSON"),
        ("no id", "missing id"),
        ("no text", "no content"),
        ("unreadable", "unreadable file"),
        ("preprocessing", "preprocessing failed"),
        ("image:", "corrupt image"),
    ):
        if needle in r:
            return kind
    return "other"
