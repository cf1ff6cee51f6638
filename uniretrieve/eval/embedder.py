"""Sources → vectors with one encoder: deduplicated, cached, with CPU input preparation overlapping the model.

Batches are planned by `Encoder.batches` (image and text items apart, texts sorted by length) and prepared by the
encoder's picklable `input_builder` in DataLoader workers, so image decoding and processor work run while the
model (GPU when present) embeds the previous batch. Only the batches in flight are held as opened images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from uniretrieve.eval.cache import EmbeddingCache
from uniretrieve.eval.sources import Source, dedupe
from uniretrieve.types import Item


class _Prepare:
    """DataLoader collate: a list of source indices → (indices, PreparedBatch). Picklable for worker processes."""

    def __init__(self, sources: Sequence[Source], builder: Any) -> None:
        self.sources = sources
        self.builder = builder

    def __call__(self, idx: list[int]) -> tuple[list[int], Any]:
        return idx, self.builder([self.sources[i].to_item() for i in idx])


class Embedder:
    """Embeds lists of `Source`s with `encoder` (the `Encoder` API), reusing `cache` entries.

    Use as a context manager so one progress display spans every part of a benchmark. Counters: `encoded` and
    `reused` (unique sources computed / read from the cache) and `truncated` (texts cut to the token limit).
    """

    def __init__(
        self,
        encoder: Any,
        cache: EmbeddingCache,
        *,
        batch_size: int = 16,
        workers: int = 0,
        show_progress: bool = True,
    ) -> None:
        self.encoder = encoder
        self.cache = cache
        self.batch_size = batch_size
        self.workers = workers
        self.show_progress = show_progress
        self.encoded = 0
        self.reused = 0
        self.truncated = 0
        self._progress: Any = None

    def __enter__(self) -> Embedder:
        if self.show_progress:
            self._progress = _progress()
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def embed(self, label: str, sources: Sequence[Source]) -> np.ndarray:
        """Vectors `[len(sources), D]` (float32, unit rows) in input order; duplicates are encoded once."""
        unique, ids = dedupe(sources)
        vecs = self.cache.load(label, unique)
        if vecs is None:
            vecs = self.encode(label, unique)
            try:
                self.cache.save(label, unique, vecs)
            except OSError as exc:  # an unwritable cache must not cost the vectors just computed
                warnings.warn(f"could not cache the embeddings of {label}: {exc}", stacklevel=2)
            self.encoded += len(unique)
        else:
            self.reused += len(unique)
        return vecs[np.asarray(ids, dtype=np.int64)]

    def encode(self, label: str, sources: Sequence[Source]) -> np.ndarray:
        """Embed `sources` in input order (no cache)."""
        from torch.utils.data import DataLoader

        out = np.empty((len(sources), self.encoder.dim), dtype=np.float32)
        if not sources:
            return out
        # Placeholders stand in for images only to plan batches (image vs text, text length); nothing is opened.
        plan = [Item(text=s.text, image="<image>" if s.has_image else None) for s in sources]
        batches = list(self.encoder.batches(plan, self.batch_size))
        if self.workers > 0:  # forked workers would each warn and turn the tokenizer's own threads off anyway
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = DataLoader(
            batches,  # type: ignore[arg-type]
            batch_size=None,
            shuffle=False,
            collate_fn=_Prepare(sources, self.encoder.input_builder),
            num_workers=self.workers,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        task = self._progress.add_task(label, total=len(sources)) if self._progress is not None else None
        for idx, batch in loader:
            out[idx] = self.encoder.forward(batch).numpy()
            self.truncated += int(batch.truncated)
            if task is not None:
                self._progress.advance(task, len(idx))
        return out


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    return Progress(
        "[bold]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
