"""`index build --on-disk` and `index add` on an on-disk index: train once on a sample, fill the lists range by range
in parallel, merge them into a list file, tune, and (on add) append a part instead of copying the index. The file
layout and why it is atomic: index/ondisk.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.build import (
    Log,
    _write_index,
    log_unreachable,
    new_index,
    train,
    tune_to_target,
    write_build_meta,
)
from uniretrieve.index.factory import format_bytes, make_choice
from uniretrieve.index.holdout import tuning_queries
from uniretrieve.index.idmap import IDMAP_NAME, IdMapWriter
from uniretrieve.index.kinds import PQ_TRAIN_ROWS
from uniretrieve.index.meta import INDEX_NAME, BuildConfig, IndexMeta
from uniretrieve.index.ondisk import (
    MAX_PARTS,
    FillPlan,
    fill_part,
    link_parts,
    lists_bytes,
    merge_parts,
    next_part,
    part_name,
    part_names,
    read_version_index,
    write_lists_table,
    write_part,
)
from uniretrieve.index.source import VectorSource
from uniretrieve.index.tune import set_param


def fill_plan(config: BuildConfig) -> FillPlan:
    return FillPlan(config.workers, config.engine, config.ray_address, config.block_rows)


def build_on_disk(
    source: VectorSource,
    out: Path,
    config: BuildConfig,
    tune_source: VectorSource | None,
    train_source: VectorSource | None,
    source_info: dict[str, Any] | None,
    log: Log,
    t_start: float,
) -> IndexMeta:
    """Build an on-disk IVF index into the fresh version folder `out` (CPU; a GPU build keeps lists in RAM)."""
    n, d = source.num_rows, source.dim
    train_n = (train_source or source).num_rows
    # the lists live on disk, so the memory budget does not choose their codes; nothing per vector stays in RAM
    # (no SQ8 re-ranking copy). auto: full vectors, as exact per probed list as the storage allows
    index_type = "ivf" if config.index_type == "auto" else config.index_type
    choice = make_choice(
        index_type,
        n,
        d,
        nlist=config.nlist,
        pq_m=config.pq_m,
        reason=(
            "--on-disk: lists in a file, full vectors (--type ivfpq for smaller files)"
            if config.index_type == "auto"
            else ""
        ),
        train_n=min(train_n, config.train_rows or PQ_TRAIN_ROWS, PQ_TRAIN_ROWS),
        storage=config.storage,
        refine=False,
    )
    log(
        f"index: {choice.type} ({choice.factory}) for {n} × {d}, lists on disk "
        f"(≈ {format_bytes(choice.expected_bytes)} of list files). Why: {choice.reason}"
    )
    index = new_index(choice, d, config)
    for name, value in choice.params.items():
        set_param(index, name, value)
    t_train = train(index, choice, train_source or source, config, on_gpu=False, log=log)
    _write_index(index, out / INDEX_NAME)
    del index

    t0 = time.perf_counter()
    idmap = IdMapWriter(out / IDMAP_NAME)
    try:
        for _, rows in source.blocks(config.block_rows):
            idmap.write(rows)
        name = part_name(1)
        filled = fill_part(
            out / INDEX_NAME, source, out, name, start=0, stop=n, first_id=0, plan=fill_plan(config), log=log
        )
        if filled != n or idmap.next_id != n:
            raise RuntimeError(f"filled {filled} vectors and {idmap.next_id} id-map rows for {n} rows")
        write_lists_table(out, [name])
    except BaseException:
        idmap.abort()
        raise
    t_add = time.perf_counter() - t0
    idmap.close()

    t0 = time.perf_counter()
    index = read_version_index(out)
    for pname, value in choice.params.items():
        set_param(index, pname, value)
    tq = tuning_queries(source, config, tune_source, hold_tail=True)
    result = tune_to_target(
        index, choice.type, tq, config, nlist=choice.nlist, log=log, search=_head_search(index, tq.hold_from)
    )
    log_unreachable(choice, result, source, config, train_source, log)
    seconds = {"train": t_train, "add": t_add, "tune": time.perf_counter() - t0}
    meta = write_build_meta(
        out,
        index,
        {**choice.to_dict(), "on_disk": True},
        result,
        source,
        config,
        source_info,
        seconds,
        t_start,
        False,
    )
    log(f"lists on disk: {format_bytes(lists_bytes(out))} in {out.name}/lists-*.ivfdata")
    return meta


def _head_search(
    index: Any, hold_from: int | None
) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None:
    """Search rows [0, hold_from) only: the held-out tail is already in the lists (one fill, one part), so it is
    kept out of the tuning's searches by an id range instead of by adding it later."""
    if hold_from is None:
        return None
    import faiss

    sel = faiss.IDSelectorRange(0, hold_from)

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF(sel=sel, nprobe=int(faiss.extract_index_ivf(index).nprobe))
        return index.search(q, k, params=params)

    return search


class PartAppender:
    """What `add_blocks` adds through for an on-disk index: the new vectors go into an in-RAM IVF copy of the
    trained index (ids continuing the index's), written as one new part by `finish`."""

    def __init__(self, base: Path, first: int) -> None:
        import faiss

        self.base = base
        self.first = first
        self.fresh = faiss.read_index(str(base / INDEX_NAME))

    @property
    def ntotal(self) -> int:
        return self.first + int(self.fresh.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        start = self.ntotal
        self.fresh.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))

    def finish(self, out: Path, log: Log) -> Any:
        """Write the new version's parts into `out`: the older parts hard-linked plus the new one (or, past
        MAX_PARTS, all merged into one); returns the version's index as readers will open it."""
        names = part_names(self.base)
        link_parts(self.base, out, names)
        new = next_part(names)
        tmp = out / f".{new}.range-added.faiss"
        _write_index(self.fresh, tmp)
        write_part(out / INDEX_NAME, [tmp], out, new)
        names = [*names, new]
        if len(names) > MAX_PARTS:
            merged = next_part(names)
            t0 = time.perf_counter()
            merge_parts(out, names, out, merged)
            for n in names:
                for ext in ("faiss", "ivfdata"):
                    (out / f"{n}.{ext}").unlink(missing_ok=True)
            log(
                f"merged {len(names)} list parts into {merged} (a copy of the lists, {time.perf_counter() - t0:.1f} s)"
            )
            names = [merged]
        write_lists_table(out, names)
        return read_version_index(out)
