"""Items → embeddings in batches: which items share a batch, preparing batches ahead of the model, and the one loop
that embeds prepared batches (`embed_stream`) and puts the rows back in input order (`encode_in_order`).

`Encoder.encode`, the evaluation embedder and the corpus encoder all run `embed_stream`; they differ only in where
the work comes from and where the vectors go.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from uniretrieve.types import Item

W = TypeVar("W")
R = TypeVar("R")


def plan_batches(
    items: Sequence[Item],
    batch_size: int,
    *,
    tokenizer: Any,
    max_image_batch: int | None = None,
    max_batch_tokens: int | None = None,
) -> Iterator[list[int]]:
    """Index lists of batches: image and text-only items apart, texts sorted by token count (longest first) and a
    text batch closed once its padded size would pass `max_batch_tokens`, so little compute goes to padding; the
    caller restores the input order."""
    text_idx = [i for i, it in enumerate(items) if it.image is None]
    image_idx = [i for i, it in enumerate(items) if it.image is not None]
    image_idx.sort(key=lambda i: -len(items[i].text or ""))
    image_bs = min(batch_size, max_image_batch or batch_size)
    for s in range(0, len(image_idx), image_bs):
        yield image_idx[s : s + image_bs]
    if not text_idx:
        return
    texts = [" ".join(x for x in (items[i].instruction, items[i].text) if x) for i in text_idx]
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(text_idx)), key=lambda j: -counts[j])
    batch: list[int] = []
    longest = 0
    for j in order:
        longest = longest or counts[j] + 1
        if batch and (
            len(batch) >= batch_size or (max_batch_tokens and (len(batch) + 1) * longest > max_batch_tokens)
        ):
            yield batch
            batch, longest = [], counts[j] + 1
        batch.append(text_idx[j])
    yield batch


def length_buckets(lengths: Sequence[int], *, min_fill: float = 0.75) -> list[list[int]]:
    """Positions of `lengths` grouped longest first, each group holding the rows down to `min_fill` × its longest,
    so that at least that share of a group's padded tokens is real. Training batches mix 300-token captions with
    few-token answers; padded as one tensor, under half its tokens were real (docs/tiny-model.md)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if not buckets or lengths[i] < min_fill * lengths[buckets[-1][0]]:
            buckets.append([])
        buckets[-1].append(i)
    return buckets


class PrepareRows:
    """`indices → (indices, input_builder(items))` over `rows`: `Item`s, or objects whose `to_item()` gives one (then
    only the batch being prepared is decoded). Picklable, so DataLoader workers run it."""

    def __init__(self, rows: Sequence[Any], input_builder: Callable[[list[Item]], Any]) -> None:
        self.rows = rows
        self.input_builder = input_builder

    def __call__(self, idx: list[int]) -> tuple[list[int], Any]:
        items = [r if isinstance(r, Item) else r.to_item() for r in (self.rows[i] for i in idx)]
        return idx, self.input_builder(items)


class _Apply:
    """Map-style dataset whose index is a work element: `dataset[w] = prepare(w)` (runs in the worker)."""

    def __init__(self, prepare: Callable[[Any], Any]) -> None:
        self.prepare = prepare

    def __getitem__(self, work: Any) -> Any:
        return self.prepare(work)


def _identity(x: Any) -> Any:  # collate_fn: the worker already built the batch (module level so it pickles)
    return x


def prepare_ahead(work: Iterable[W], prepare: Callable[[W], R], *, workers: int = 0) -> Iterable[R]:
    """`prepare(w)` for each `w` of `work`, in order. With `workers` > 0 DataLoader processes run it, 4 batches ahead
    each, so image decoding and the processor overlap the model; `work` is consumed in this process."""
    if workers <= 0:
        return map(prepare, work)
    from torch.utils.data import DataLoader

    # forked workers would each warn and turn the tokenizer's own threads off anyway
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return DataLoader(
        _Apply(prepare),  # type: ignore[arg-type]
        batch_size=None,
        sampler=work,  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4,
    )


def embed_stream(
    encoder: Any,
    work: Iterable[W],
    prepare: Callable[[W], R],
    *,
    batch_of: Callable[[R], Any] = lambda r: r,
    workers: int = 0,
) -> Iterator[tuple[R, np.ndarray | None]]:
    """(prepared, float32 vectors `[B, D]`) per work element: `batch_of(prepared)` is the `PreparedBatch` the encoder
    embeds (None: nothing to embed, e.g. every row of it failed to load)."""
    for prepared in prepare_ahead(work, prepare, workers=workers):
        batch = batch_of(prepared)
        yield prepared, None if batch is None else encoder.forward(batch).numpy()


def encode_in_order(
    encoder: Any,
    rows: Sequence[Any],
    batches: Iterable[list[int]],
    *,
    workers: int = 0,
    on_batch: Callable[[int, Any], None] | None = None,
) -> np.ndarray:
    """Embed `rows` (see `PrepareRows`) batched as planned → float32 `[len(rows), D]` in input order.

    on_batch: called with each batch's row count and its `PreparedBatch` (progress, truncation counts).
    """
    out = np.empty((len(rows), encoder.dim), dtype=np.float32)
    if not rows:
        return out
    prepare = PrepareRows(rows, encoder.input_builder)
    for (idx, batch), vectors in embed_stream(
        encoder, batches, prepare, batch_of=lambda r: r[1], workers=workers
    ):
        out[idx] = vectors
        if on_batch is not None:
            on_batch(len(idx), batch)
    return out


def progress_bar() -> Any:
    """The rich progress display that `Encoder.encode` and the evaluation embedder show; rich is imported
    only when progress is shown."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    return Progress(
        "[bold]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
