"""Sources → vectors with one encoder: deduplicated, cached, with CPU input preparation overlapping the model.

Batches are planned by `Encoder.batches` (image and text items apart, texts sorted by length) and run through the
encoder's one batch loop (`uniretrieve.models.batching.encode_in_order`), prepared by its picklable `input_builder`
in DataLoader workers, so image decoding and processor work run while the model (GPU when present) embeds the
previous batch. Only the batches in flight are held as opened images.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from uniretrieve.eval.cache import EmbeddingCache
from uniretrieve.eval.sources import Source, dedupe
from uniretrieve.models.batching import encode_in_order, progress_bar
from uniretrieve.types import Item


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
            self._progress = progress_bar()
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
        if not sources:
            return np.empty((0, self.encoder.dim), dtype=np.float32)
        # Placeholders stand in for images only to plan batches (image vs text, text length); nothing is opened.
        plan = [Item(text=s.text, image="<image>" if s.has_image else None) for s in sources]
        task = self._progress.add_task(label, total=len(sources)) if self._progress is not None else None

        def on_batch(n: int, batch: Any) -> None:
            self.truncated += int(batch.truncated)
            if task is not None:
                self._progress.advance(task, n)

        batches = list(self.encoder.batches(plan, self.batch_size))
        return encode_in_order(self.encoder, sources, batches, workers=self.workers, on_batch=on_batch)
