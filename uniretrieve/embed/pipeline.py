"""`encode_corpus`: corpus → Parquet embedding shards, resumable, incremental, split across ranks.

Flow (like clip-retrieval's reader → mapper → writer runner, plus what it lacks: resume and one-node
multi-GPU; docs/design-notes.md#encode-pipeline):

    Corpus (data/corpus.py) ─ listing + plan (plan.py), the segment to run (prepare.py) ─ work batches (batches.py,
    DataLoader workers decode and preprocess) ─ Encoder.forward (models/batching.py `embed_stream`, the encoder's one
    batch loop) ─ ShardWriter (writer.py, background thread, atomic files) ─ errors.jsonl, then manifest.json
    (commit.py, under a directory lock)

Every moment is safe to kill: a chunk counts as done only once its shard is renamed into place and recorded in the
manifest; a resumed run redoes the unrecorded chunks of the open segment and nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniretrieve.data.corpus import Corpus, CorpusSpec
from uniretrieve.embed.batches import LoadedBatch, PrepareBatch, error_kind, work_batches
from uniretrieve.embed.commit import ChunkCommitter
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.manifest import LOCK_NAME, SegmentInfo, check_compatible, directory_lock, read_manifest
from uniretrieve.embed.plan import Listing, build_listing, chunk_bounds, rank_chunks, stale_ids
from uniretrieve.embed.prepare import (
    barrier,
    check_encoder_matches,
    clear_directory,
    init_distributed,
    load_encoder,
    make_spec,
    prepare_segment,
)
from uniretrieve.embed.schema import EmbeddingSpec, row_group_rows
from uniretrieve.embed.writer import ChunkResult, ShardWriter
from uniretrieve.models.batching import embed_stream

if TYPE_CHECKING:
    from uniretrieve.models.encoder import Encoder

log = logging.getLogger("uniretrieve.encode")


@dataclass
class EncodeResult:
    """What one process did. `skipped` maps a reason class to a count (full reasons are in errors.jsonl)."""

    output: Path
    rank: int
    world_size: int
    planned: int = 0
    """Rows this process had to encode in this run (0 when the directory was up to date)."""
    encoded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    seconds: float = 0.0
    """Wall time of the whole call (model load, listing, encoding)."""
    encode_seconds: float = 0.0
    """Wall time of the encode loop alone (items/s is computed on it)."""
    total_rows: int = 0
    """Rows in the directory after this run."""
    segment: int | None = None
    stale_rows: int = 0
    """Stored rows whose input no longer exists (kept)."""
    complete: bool = False
    repaired: list[str] = field(default_factory=list)
    """Shards found missing or damaged at the start; their rows were encoded again."""

    @property
    def items_per_s(self) -> float:
        n = self.encoded + sum(self.skipped.values())
        return n / self.encode_seconds if self.encode_seconds > 0 else 0.0


BatchHook = Callable[[int], None]
"""Called after each encoded batch with the number of batches so far (progress reporting, fault injection)."""


def encode_corpus(
    config: EncodeConfig,
    *,
    encoder: Encoder | None = None,
    on_batch: BatchHook | None = None,
    ray_actor: type | None = None,
) -> EncodeResult:
    """Encode `config.input` into shards in `config.output`; resume, update or refuse as the directory requires.

    encoder: an already loaded Encoder (else loaded from `config.model`; with `--engine ray` the actors load it and
    this process only learns its description). ray_actor: the Ray engine's embedding class (tests inject faults).
    """
    t0 = time.perf_counter()
    rank, world = config.resolved_rank()
    dist = init_distributed(world)
    root = Path(config.output)
    corpus = Corpus(
        CorpusSpec(
            path=config.input,
            text_column=config.text_column,
            image_column=config.image_column,
            id_column=config.id_column,
            instruction=config.instruction,
            allow_outside_root=config.allow_outside_root,
        )
    )
    if config.engine == "ray" and world > 1:
        raise ValueError("--engine ray schedules the whole corpus itself: run one driver, without ranks")
    enc = encoder if encoder is not None else _load(config, rank)
    check_encoder_matches(enc, config)
    spec = make_spec(enc, config)
    existing = read_manifest(root) if root.is_dir() else None
    if existing is not None and not config.overwrite:
        check_compatible(existing, spec, root=root)  # refuse before the (long) listing pass
    root.mkdir(parents=True, exist_ok=True)
    with _status(config.progress, f"listing and hashing {corpus.path}"):
        listing = build_listing(corpus)  # before --overwrite clears anything: a bad corpus loses nothing
    if config.overwrite:
        if world > 1 and dist is None:
            raise ValueError(
                "--overwrite with several ranks needs torchrun (rank 0 clears the directory first)"
            )
        if rank == 0:
            clear_directory(root)
        barrier(dist)
    result = EncodeResult(output=root, rank=rank, world_size=world)
    with directory_lock(root):
        manifest, segment, plan, result.repaired = prepare_segment(
            root, spec, config, corpus, enc, listing, world
        )
        result.stale_rows = stale_ids(root, manifest, listing) if manifest.shards else 0
    config.save(root)
    if segment is not None:
        chunks = rank_chunks(segment, rank, world)
        result.segment = segment.index
        result.planned = sum(chunk_bounds(segment, k)[1] - chunk_bounds(segment, k)[0] for k in chunks)
        if chunks:
            t1 = time.perf_counter()
            try:
                _run(
                    root,
                    spec,
                    config,
                    enc,
                    corpus,
                    listing,
                    plan,
                    segment,
                    chunks,
                    result,
                    on_batch,
                    rank,
                    ray_actor,
                )
            finally:
                result.encode_seconds = time.perf_counter() - t1
    barrier(dist)
    final = read_manifest(root)
    assert final is not None
    result.total_rows = final.total_rows
    result.complete = final.complete
    result.seconds = time.perf_counter() - t0
    return result


# --- the encode loop -------------------------------------------------------------------------------------------
def _run(
    root: Path,
    spec: EmbeddingSpec,
    config: EncodeConfig,
    enc: Encoder,
    corpus: Corpus,
    listing: Listing,
    plan: np.ndarray,
    segment: SegmentInfo,
    chunks: list[int],
    result: EncodeResult,
    on_batch: BatchHook | None,
    rank: int,
    ray_actor: type | None = None,
) -> None:
    image_bs = min(config.batch_size, getattr(enc.spec, "max_image_batch", None) or config.batch_size)
    stream = work_batches(corpus, listing, plan, segment, chunks, config.batch_size, image_bs)
    if config.engine == "ray":  # decode, preprocess and embed in the cluster; this process commits
        from uniretrieve.embed.ray_engine import chunk_ordered

        loader: Iterator[tuple[LoadedBatch, np.ndarray | None]] = chunk_ordered(
            config, enc, stream, **({"actor": ray_actor} if ray_actor else {})
        )
    else:
        loader = embed_stream(
            enc, stream, PrepareBatch(enc.input_builder), batch_of=_prepared, workers=config.workers
        )
    commit = ChunkCommitter(root, plan, listing, segment.index, rank, row_group_rows(spec.dim, spec.dtype))
    writer = ShardWriter(root, spec, commit)
    pending: dict[int, ChunkResult] = {}
    skipped: Counter[str] = Counter()
    warned = False
    n_batches = 0
    try:
        with _progress(config.progress, result.planned) as advance:
            for lb, vectors in loader:
                cr = pending.get(lb.chunk)
                if cr is None:
                    start, end = chunk_bounds(segment, lb.chunk)
                    cr = pending[lb.chunk] = ChunkResult(
                        segment.index, lb.chunk, segment.shard_base + lb.chunk, start, end
                    )
                if vectors is not None:
                    cr.add_rows([r.position for r in lb.records], _row_columns(lb), vectors)
                    cr.truncated += lb.prepared.truncated
                    result.encoded += len(lb.records)
                    result.truncated += lb.prepared.truncated
                    if lb.prepared.truncated and not warned:
                        warned = True
                        log.warning(
                            "texts longer than %d tokens are truncated (counted in the summary)",
                            enc.max_text_tokens,
                        )
                for rec, reason in lb.errors:
                    cr.errors.append(_error_entry(rec, reason, segment.index, lb.chunk))
                    skipped[error_kind(reason)] += 1
                advance(lb.seen)
                n_batches += 1
                release_free_memory()
                if on_batch is not None:
                    on_batch(n_batches)
                if lb.last:
                    writer.submit(pending.pop(lb.chunk))
    except BaseException:
        # finished chunks already handed over are complete: let them land, then stop
        with contextlib.suppress(Exception):
            writer.close()
        result.skipped = dict(skipped)
        raise
    writer.close()
    result.skipped = dict(skipped)


def release_free_memory() -> None:
    """Hand glibc's free heap pages back to the system (`malloc_trim`). A batch's large short-lived tensors are
    freed between the chunk's long-lived rows (vectors, ids), and glibc keeps that fragmented space resident: peak
    RSS of an image encode was 1.47 GB at 24,000 images with unime-tiny, 1.27 GB with this after every batch
    (benchmarks/RESULTS.md, "Encode memory"; ~0.05 ms a call). No-op where libc has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """libc's malloc_trim, looked up once (None where libc has none, e.g. musl or macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


def _load(config: EncodeConfig, rank: int) -> Any:
    if config.engine == "ray":
        from uniretrieve.embed.ray_engine import encoder_facts

        return encoder_facts(config)
    return load_encoder(config, rank)


def _prepared(lb: LoadedBatch) -> Any:
    return lb.prepared


def _row_columns(lb: LoadedBatch) -> dict[str, list[Any]]:
    recs = lb.records
    return {
        "id": [r.id for r in recs],
        "modality": [r.modality for r in recs],
        "text": [r.text for r in recs],
        "instruction": [r.instruction for r in recs],
        "source": [r.source for r in recs],
        "group_id": [r.group_id for r in recs],
        "content_hash": [r.content_hash for r in recs],
        "width": [w for w, _ in lb.sizes],
        "height": [h for _, h in lb.sizes],
        "metadata": [r.metadata for r in recs],
    }


def _error_entry(rec: Any, reason: str, segment: int, chunk: int) -> dict[str, Any]:
    return {
        "id": rec.id,
        "source": rec.source,
        "path": rec.image,
        "position": rec.position,
        "kind": error_kind(reason),
        "reason": reason,
        "content_hash": rec.content_hash,
        "segment": segment,
        "chunk": chunk,
    }


def _status(show: bool, message: str) -> contextlib.AbstractContextManager[Any]:
    if not show:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} items/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("encoding", total=total, rate="   -")
        t0 = time.perf_counter()
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=n, rate=f"{rate:7.1f}")

        yield advance


__all__ = ["LOCK_NAME", "EncodeConfig", "EncodeResult", "encode_corpus", "make_spec"]
