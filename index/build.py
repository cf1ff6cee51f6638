"""Shards → FAISS index directory: choose, train on a bounded sample, add streaming in blocks, tune, save.

Peak memory is the index plus one block of `block_rows` float32 vectors plus the training sample (bounded by
`train_rows`), never the whole float32 matrix (a flat index *is* the matrix). Output, written atomically:
`index.faiss`, `idmap.parquet`, `index.json` (index/meta.py), in a new version folder (index/store.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from uniretrieve.index import auto
from uniretrieve.index import gpu as gpu_mod
from uniretrieve.index.factory import (
    MAX_TRAIN_PER_CENTROID,
    MIN_TRAIN_PER_CENTROID,
    IndexChoice,
    choose_index,
    format_bytes,
    make_choice,
)
from uniretrieve.index.holdout import HeldTail, tuning_queries
from uniretrieve.index.idmap import IDMAP_NAME, IdMapWriter
from uniretrieve.index.kinds import PQ_TRAIN_ROWS, kind_of
from uniretrieve.index.meta import INDEX_NAME, META_NAME, BuildConfig, IndexMeta, write_meta
from uniretrieve.index.source import VectorSource
from uniretrieve.index.tune import (
    TuneQueries,
    TuneResult,
    set_param,
    tune,
)

Log = Callable[[str], None]


class IndexExistsError(FileExistsError):
    """The output directory already holds an index."""


def resolve_choice(
    n: int, d: int, config: BuildConfig, *, gpu: bool, train_n: int | None = None
) -> IndexChoice:
    """train_n: rows available for training (the training source's size), which bounds the PQ codebook bits."""
    train_n = min(train_n or n, config.train_rows or PQ_TRAIN_ROWS, PQ_TRAIN_ROWS)
    if config.index_type == "auto":
        return choose_index(
            n, d, memory_budget=config.memory_budget, gpu=gpu, train_n=train_n, storage=config.storage
        )
    return make_choice(
        config.index_type,
        n,
        d,
        nlist=config.nlist,
        pq_m=config.pq_m,
        hnsw_m=config.hnsw_m,
        budget=config.memory_budget,
        train_n=train_n,
        storage=config.storage,
        gpu=gpu,
    )


def wanted_train_rows(choice: IndexChoice, n: int) -> int:
    """256 points per IVF list (FAISS's `max_points_per_centroid`: more would be subsampled away), at least 65,536
    for PQ codebooks, never more than the corpus."""
    return min(n, max(MAX_TRAIN_PER_CENTROID * max(choice.nlist, 1), _min_train_rows(choice)))


def _min_train_rows(choice: IndexChoice) -> int:
    return max(MIN_TRAIN_PER_CENTROID * max(choice.nlist, 1), kind_of(choice.type).min_train_rows)


def train_rows(choice: IndexChoice, n: int, d: int, config: BuildConfig) -> int:
    """`config.train_rows` when set; else `wanted_train_rows`, cut to the float32 rows `memory_budget` holds, down to
    FAISS's minimum of 39 per list (65,536 for PQ). The sample is freed before adding, so it is the training phase's
    peak: 1M × 4096 as IVF4096 would otherwise sample the whole corpus, 16 GB, for an 8 GB fp16 index (measured peak
    19.8 GB)."""
    if config.train_rows:
        return min(n, config.train_rows)
    return min(wanted_train_rows(choice, n), max(config.memory_budget // (4 * d), _min_train_rows(choice)))


def new_index(choice: IndexChoice, d: int, config: BuildConfig) -> Any:
    import faiss

    index = faiss.index_factory(d, choice.factory, faiss.METRIC_INNER_PRODUCT)
    setup = kind_of(choice.type).setup
    if setup is not None:
        setup(index, config.ef_construction)
    return index


def train(
    index: Any, choice: IndexChoice, source: VectorSource, config: BuildConfig, *, on_gpu: bool, log: Log
) -> float:
    """Train on a uniform random sample of rows (read by row index, not the whole corpus); returns seconds."""
    if not choice.needs_training:
        return 0.0
    t0 = time.perf_counter()
    m = train_rows(choice, source.num_rows, source.dim, config)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(source.num_rows, size=m, replace=False))
    sample = source.take(rows)
    capped = not config.train_rows and m < wanted_train_rows(choice, source.num_rows)
    log(
        f"training {choice.factory} on {m} sampled vectors ({format_bytes(sample.nbytes)})"
        + (
            f"; fewer than 256 per list to stay within --memory-budget {format_bytes(config.memory_budget)}"
            if capped
            else ""
        )
    )
    if on_gpu and kind_of(choice.type).gpu_kmeans:
        import faiss

        # k-means assignment is the cost; run it on all GPUs through a GPU flat clustering index
        ivf = faiss.extract_index_ivf(index)
        ivf.clustering_index = gpu_mod.index_to_gpus(faiss.IndexFlatL2(ivf.d), fp16=False)
    index.train(sample)
    return time.perf_counter() - t0


def add_blocks(
    index: Any,
    source: VectorSource,
    idmap: IdMapWriter,
    config: BuildConfig,
    *,
    log: Log,
    keep: np.ndarray | None = None,
    hold: HeldTail | None = None,
) -> float:
    """Add vectors block by block, writing the id-map rows of each block in the same step; returns seconds.
    keep: bool per source row, the rows to add (an add skips rows already in the index). hold: rows from
    `hold.start` on are collected into it instead of added (`HeldTail.add_to` adds them). On any failure the id
    map's partial file is dropped (`idmap.abort()`), so no half-written id map is left."""
    t0 = time.perf_counter()
    done = pos = 0
    try:
        reserve_rows(index, source.num_rows if keep is None else int(keep.sum()))
        for vectors, rows in source.blocks(config.block_rows):
            if len(vectors) != len(rows):
                raise RuntimeError(f"block of {len(vectors)} vectors came with {len(rows)} id-map rows")
            start, pos = pos, pos + len(rows)
            if keep is not None:
                mask = keep[start:pos]
                vectors, rows = vectors[mask], rows.filter(pa.array(mask))
            elif hold is not None and pos > hold.start:
                cut = max(0, hold.start - start)
                hold.blocks.append((np.array(vectors[cut:], np.float32), rows.slice(cut)))
                vectors, rows = vectors[:cut], rows.slice(0, cut)
            index.add(vectors)
            idmap.write(rows)
            done += len(vectors)
        if idmap.next_id != index.ntotal:
            raise RuntimeError(f"id map holds {idmap.next_id} rows but the index {index.ntotal} vectors")
    except BaseException:
        idmap.abort()
        raise
    log(f"added {done} vectors in blocks of ≤{config.block_rows} ({time.perf_counter() - t0:.1f} s)")
    return time.perf_counter() - t0


def reserve_rows(index: Any, rows: int) -> None:
    """Size a flat code store (Flat, SQfp16, HNSW's vectors) for `rows` more vectors in one allocation.

    FAISS grows it with std::vector::resize per added block; each reallocation holds the old and the new copy at once,
    up to 2× the final index for a moment (benchmarks/build_memory.py: 70,000 × 4096 Flat, 1,094 MiB, peaked at
    2,192 MiB regrown, 1,235 MiB sized once). Resizing to the final size and back keeps the capacity, so the adds
    never reallocate. IVF lists grow one small list at a time and
    GPU indexes manage their own memory: both are left alone."""
    import faiss

    store = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    if not isinstance(store, faiss.IndexFlatCodes) or not store.codes.is_owned:
        return
    size = store.codes.size()
    store.codes.resize(size + rows * store.code_size)
    store.codes.resize(size)


def tune_to_target(
    index: Any,
    index_type: str,
    tq: TuneQueries,
    config: BuildConfig,
    *,
    nlist: int,
    log: Log,
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> TuneResult:
    """`tune` to `config`'s target recall@k (within its latency budget, if any) and log the outcome."""
    result = tune(
        index,
        index_type,
        tq,
        target=config.target_recall,
        k=config.k,
        nlist=nlist,
        latency_ms=config.latency_ms,
        search=search,
    )
    log(tune_line(result))
    return result


def build_index(
    source: VectorSource,
    out_dir: str | Path,
    config: BuildConfig | None = None,
    *,
    tune_source: VectorSource | None = None,
    train_source: VectorSource | None = None,
    source_info: dict[str, Any] | None = None,
    overwrite: bool = False,
    log: Log = print,
) -> IndexMeta:
    """Build an index directory from `source`. Returns the written `IndexMeta`.

    train_source: draw the training sample from these vectors instead (same dim); lets a full build reuse the
    training of an earlier one, which is what `index add` == full build is checked against.
    """
    from uniretrieve.index.store import writing

    config = config or BuildConfig()
    with writing(out_dir) as w:  # serialised with other writers; the new version replaces the old in one step
        if w.base is not None and not overwrite:
            raise IndexExistsError(
                f"{out_dir} already holds an index; use `uniretrieve index add` to append shards, "
                f"or --overwrite to rebuild it"
            )
        folder = w.new_folder()
        meta = _build(source, folder, config, tune_source, train_source, source_info, log)
        w.commit(folder)
    log(
        f"wrote {folder.name}/{INDEX_NAME}, {IDMAP_NAME}, {META_NAME} in {out_dir} ({meta.build_seconds['total']:.1f} s)"
    )
    return meta


def _build(
    source: VectorSource,
    out: Path,
    config: BuildConfig,
    tune_source: VectorSource | None,
    train_source: VectorSource | None,
    source_info: dict[str, Any] | None,
    log: Log,
) -> IndexMeta:
    """Build into the fresh version folder `out`."""
    t_start = time.perf_counter()
    on_gpu = gpu_mod.resolve_gpu(config.gpu)
    n, d = source.num_rows, source.dim
    if config.on_disk:
        from uniretrieve.index.ondisk_build import build_on_disk

        return build_on_disk(source, out, config, tune_source, train_source, source_info, log, t_start)
    if config.index_type == "auto" and auto.measures(n, d, gpu=on_gpu):
        return auto.build_measured(source, out, config, tune_source, train_source, source_info, log, t_start)
    choice = resolve_choice(n, d, config, gpu=on_gpu, train_n=(train_source or source).num_rows)
    log(
        f"index: {choice.type} ({choice.factory}) for {n} × {d}; expected memory {format_bytes(choice.expected_bytes)}"
        f" (budget {format_bytes(config.memory_budget)}). Why: {choice.reason}"
    )
    if choice.expected_bytes > config.memory_budget:
        log(f"warning: the expected size exceeds --memory-budget {format_bytes(config.memory_budget)}")

    index = new_index(choice, d, config)
    for name, value in choice.params.items():
        set_param(index, name, value)
    t_train = train(index, choice, train_source or source, config, on_gpu=on_gpu, log=log)
    work = index
    kind = kind_of(choice.type)
    gpu_ok = on_gpu and kind.gpu
    if gpu_ok:
        try:
            work = gpu_mod.index_to_gpus(index, fp16=kind.gpu_fp16)
            log(f"adding on {gpu_mod.faiss_gpu_count()} GPU(s)")
        except RuntimeError as exc:  # e.g. a PQ layout the classic GPU IVF-PQ does not implement
            log(f"GPU copy of {choice.factory} failed ({exc}); building on the CPU")
            gpu_ok = False
    t0 = time.perf_counter()
    tq = tuning_queries(source, config, tune_source, hold_tail=True)
    t_gt = time.perf_counter() - t0
    idmap = IdMapWriter(out / IDMAP_NAME)
    held = HeldTail(tq.hold_from) if tq.hold_from is not None else None
    t_add = add_blocks(work, source, idmap, config, log=log, hold=held)
    t0 = time.perf_counter() - t_gt
    cpu_copy = gpu_mod.index_to_cpu(work) if gpu_ok else index
    result = tune_to_target(
        work,
        choice.type,
        tq,
        config,
        nlist=choice.nlist,
        log=log,
        search=lambda q, kk: gpu_mod.search_index(work, q, kk, on_gpu=gpu_ok, cpu_index=cpu_copy),
    )
    log_unreachable(choice, result, source, config, train_source, log)
    t_tune = time.perf_counter() - t0
    if held is not None:
        try:
            held.add_to(work, idmap)
        except BaseException:
            idmap.abort()
            raise
    if gpu_ok:
        index = gpu_mod.index_to_cpu(work) if held is not None else cpu_copy
    _write_index(index, out / INDEX_NAME)
    idmap.close()
    seconds = {"train": t_train, "add": t_add, "tune": t_tune}
    return write_build_meta(
        out, index, choice.to_dict(), result, source, config, source_info, seconds, t_start, gpu_ok
    )


def log_unreachable(
    choice: IndexChoice,
    result: TuneResult,
    source: VectorSource,
    config: BuildConfig,
    train_source: VectorSource | None,
    log: Log,
) -> None:
    if result.reached or not result.param:
        return
    train_n = min((train_source or source).num_rows, config.train_rows or PQ_TRAIN_ROWS, PQ_TRAIN_ROWS)
    log(
        auto.unreachable_line(
            choice,
            result,
            n=source.num_rows,
            d=source.dim,
            budget=config.memory_budget,
            storage=config.storage,
            train_n=train_n,
        )
    )


def write_build_meta(
    out: Path,
    index: Any,
    choice: dict[str, Any],
    result: TuneResult,
    source: VectorSource,
    config: BuildConfig,
    source_info: dict[str, Any] | None,
    seconds: dict[str, float],
    t_start: float,
    gpu_ok: bool,
) -> IndexMeta:
    meta = IndexMeta(
        dim=source.dim,
        num_vectors=int(index.ntotal),
        type=choice["type"],
        factory=choice["factory"],
        model=dict(source.spec_settings),
        encoder=dict(source.model_info),
        sources=[
            {
                **(source_info or {}),
                "manifest_hash": source.fingerprint,
                "rows": source.num_rows,
                "first_id": 0,
            }
        ],
        search_params={**choice.get("params", {}), **result.search_params()},
        tuning=result.to_dict(),
        choice=choice,
        config=config.to_dict(),
        build_seconds={
            **{name: round(v, 3) for name, v in seconds.items()},
            "total": round(time.perf_counter() - t_start, 3),
        },
        built_on="gpu" if gpu_ok else "cpu",
    )
    write_meta(out, meta)
    return meta


def tune_line(r: TuneResult) -> str:
    if not r.param:
        return f"exact index: recall@{r.k} {r.recall:.4f} on {r.queries} {r.query_kind}, {r.latency_ms:.2f} ms/query"
    status = "reached" if r.reached else "NOT reached"
    return (
        f"tuned {r.param}={r.value}: recall@{r.k} {r.recall:.4f} (target {r.target} {status}) on {r.queries} "
        f"{r.query_kind}, {r.latency_ms:.2f} ms/query" + (f"; {r.note}" if r.note else "")
    )


def _write_index(index: Any, path: Path) -> None:
    """faiss.write_index, atomically (temp file in the same directory, fsync, rename)."""
    import faiss

    from uniretrieve.io import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
