"""`encode_corpus`: corpus → Parquet embedding shards, resumable, incremental, split across ranks.

Flow (like clip-retrieval's reader → mapper → writer runner, plus what it lacks: resume and one-node
multi-GPU; docs/design-notes.md#encode-pipeline):

    Corpus (data/corpus.py) ─ listing + plan (plan.py) ─ work batches (batches.py, DataLoader workers decode and
    preprocess) ─ Encoder.forward (models/batching.py `embed_stream`, the encoder's one batch loop) ─ ShardWriter (writer.py, background thread, atomic files)
    ─ errors.jsonl, then manifest.json (commit.py, under a directory lock)

Every moment is safe to kill: a chunk counts as done only once its shard is renamed into place and recorded in the
manifest; a resumed run redoes the unrecorded chunks of the open segment and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from uniretrieve.embed.config import CONFIG_NAME, EncodeConfig, default_shard_rows
from uniretrieve.embed.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    SegmentInfo,
    check_compatible,
    directory_lock,
    read_manifest,
    write_manifest,
)
from uniretrieve.embed.plan import (
    Listing,
    build_listing,
    chunk_bounds,
    compute_plan,
    new_segment,
    plan_sha256,
    rank_chunks,
    stale_ids,
)
from uniretrieve.embed.repair import reconcile
from uniretrieve.embed.schema import EmbeddingSpec, row_group_rows
from uniretrieve.embed.writer import (
    ERRORS_NAME,
    SHARD_PREFIX,
    ChunkResult,
    ShardWriter,
    remove_stale_temps,
)
from uniretrieve.io import is_stale_temp
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
) -> EncodeResult:
    """Encode `config.input` into shards in `config.output`; resume, update or refuse as the directory requires.

    encoder: an already loaded Encoder (else loaded from `config.model`).
    """
    t0 = time.perf_counter()
    rank, world = config.resolved_rank()
    dist = _init_distributed(world)
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
    enc = encoder if encoder is not None else _load_encoder(config, rank)
    _check_encoder_matches(enc, config)
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
        _barrier(dist)
    result = EncodeResult(output=root, rank=rank, world_size=world)
    with directory_lock(root):
        manifest, segment, plan, result.repaired = _prepare(root, spec, config, corpus, enc, listing, world)
        result.stale_rows = stale_ids(root, manifest, listing) if manifest.shards else 0
    config.save(root)
    if segment is not None:
        chunks = rank_chunks(segment, rank, world)
        result.segment = segment.index
        result.planned = sum(chunk_bounds(segment, k)[1] - chunk_bounds(segment, k)[0] for k in chunks)
        if chunks:
            t1 = time.perf_counter()
            try:
                _run(root, spec, config, enc, corpus, listing, plan, segment, chunks, result, on_batch, rank)
            finally:
                result.encode_seconds = time.perf_counter() - t1
    _barrier(dist)
    final = read_manifest(root)
    assert final is not None
    result.total_rows = final.total_rows
    result.complete = final.complete
    result.seconds = time.perf_counter() - t0
    return result


# --- setup -----------------------------------------------------------------------------------------------------
def make_spec(enc: Encoder, config: EncodeConfig) -> EmbeddingSpec:
    """Everything that must match for vectors to be mixed: the model's description plus the corpus columns."""
    d = enc.describe()
    extra = {
        "chat_wrapper": d.get("chat_wrapper"),
        "max_text_tokens": d.get("max_text_tokens"),
        "pooling": d.get("pooling"),
        "compute_dtype": str(getattr(enc, "dtype", "")).replace("torch.", ""),
        **config.corpus_settings(),
    }
    return EmbeddingSpec(
        dim=int(d["dim"]),
        dtype=config.dtype,
        model_id=str(d["model_id"]),
        weight_hash=str(d["weight_hash"]),
        family=str(d["family"]),
        prompt_regime=str(d["prompt_regime"]),
        instruction=config.instruction,
        normalized=True,
        extra=extra,
    )


def _check_encoder_matches(enc: Encoder, config: EncodeConfig) -> None:
    """A caller-supplied encoder must agree with the config that is saved next to the shards."""
    wrong = []
    if enc.prompt_regime != config.prompt_regime:
        wrong.append(f"prompt_regime {enc.prompt_regime!r} vs {config.prompt_regime!r}")
    if config.max_text_tokens is not None and enc.max_text_tokens != config.max_text_tokens:
        wrong.append(f"max_text_tokens {enc.max_text_tokens} vs {config.max_text_tokens}")
    if wrong:
        raise ValueError("the encoder passed in disagrees with the config: " + "; ".join(wrong))


def _load_encoder(config: EncodeConfig, rank: int) -> Encoder:
    from uniretrieve.models.device import resolve_device
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(
        config.model,
        device=resolve_device(config.device, rank=rank),
        dtype=config.model_dtype,
        adapter=config.adapter,
        prompt_regime=config.prompt_regime,
        max_text_tokens=config.max_text_tokens,
    )


def _init_distributed(world: int) -> Any:
    """Join torchrun's process group when launched by it (for barriers only; ranks coordinate via the manifest)."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    import torch.distributed as tdist

    if not tdist.is_initialized():
        import torch

        tdist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return tdist


def _barrier(dist: Any) -> None:
    if dist is not None:
        dist.barrier()


def clear_directory(root: Path) -> None:
    """--overwrite: remove what an encode run wrote (shards, manifest, errors, config, temps); nothing else."""
    for p in root.iterdir():
        ours = (
            (p.name.startswith(SHARD_PREFIX) and p.name.endswith(".parquet"))
            or p.name in (MANIFEST_NAME, ERRORS_NAME, CONFIG_NAME)
            or is_stale_temp(p)
        )
        if ours and p.is_file():
            p.unlink()


def _prepare(
    root: Path,
    spec: EmbeddingSpec,
    config: EncodeConfig,
    corpus: Corpus,
    enc: Encoder,
    listing: Listing,
    world: int,
) -> tuple[Manifest, SegmentInfo | None, np.ndarray, list[str]]:
    """Under the directory lock: check settings and the shards, then join the open segment or open a new one (None:
    nothing to do). Also returns the damaged shards found (their rows are in the plan again)."""
    remove_stale_temps(root)
    manifest = read_manifest(root)
    repaired: list[str] = []
    if manifest is None:
        strays = sorted(p.name for p in root.glob(f"{SHARD_PREFIX}*.parquet"))
        if strays:
            raise ManifestError(
                f"{root} holds shards ({strays[0]} …) but no {MANIFEST_NAME}; it was not written by this tool or "
                "the manifest was lost. Use another directory, or --overwrite to replace them"
            )
        manifest = Manifest.new(spec, model=enc.describe(), input=corpus.describe())
        write_manifest(root, manifest)
    else:
        check_compatible(manifest, spec, root=root)
        repaired = reconcile(root, manifest, checksums=True if config.verify else None)
    changed = False
    open_seg = next((s for s in manifest.segments if not s.complete), None)
    if open_seg is not None:
        plan = compute_plan(listing, root, manifest, open_seg.index)
        if open_seg.listing_sha256 == listing.sha256 and open_seg.counts.get("plan_sha256") == plan_sha256(
            plan
        ):
            return manifest, open_seg, plan, repaired
        # the input changed while this segment was unfinished: keep its finished shards, plan the rest anew
        log.warning(
            "input changed since the unfinished run %d; keeping its shards and planning again", open_seg.index
        )
        open_seg.complete = True
        open_seg.counts["abandoned"] = True
        changed = True
    plan = compute_plan(listing, root, manifest, len(manifest.segments))
    if len(plan) == 0:
        if changed or not manifest.complete:
            manifest.complete = all(s.complete for s in manifest.segments)
            write_manifest(root, manifest)
        return manifest, None, plan, repaired
    shard_rows = config.shard_rows or default_shard_rows(spec.dim, spec.dtype)
    segment = new_segment(manifest, listing, plan, shard_rows, world)
    segment.config = config.to_dict()
    manifest.segments.append(segment)
    manifest.complete = False
    manifest.input = corpus.describe()
    write_manifest(root, manifest)
    return manifest, segment, plan, repaired


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
) -> None:
    image_bs = min(config.batch_size, getattr(enc.spec, "max_image_batch", None) or config.batch_size)
    stream = work_batches(corpus, listing, plan, segment, chunks, config.batch_size, image_bs)
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
