"""The build's tuning queries: real query shards when given, else the corpus's last rows held out of the index while
it is tuned (`HeldTail`), else stand-ins made from database vectors (docs/tuning.md#stand-in-queries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from uniretrieve.index import gpu as gpu_mod
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import VectorSource
from uniretrieve.index.tune import TuneQueries, make_tune_queries, stand_in_queries


@dataclass
class HeldTail:
    """The last rows of the corpus, kept out of the index while it is tuned on them (they are then fresh queries to
    it) and added after, in order, so internal ids stay the rows' order."""

    start: int
    """First held row."""
    blocks: list[tuple[np.ndarray, pa.Table]] = field(default_factory=list)

    def add_to(self, index: Any, idmap: Any) -> None:
        for vectors, rows in self.blocks:
            index.add(vectors)
            idmap.write(rows)
        self.blocks = []


def tuning_queries(
    source: VectorSource,
    config: BuildConfig,
    tune_source: VectorSource | None,
    *,
    hold_tail: bool = False,
) -> TuneQueries:
    """Real queries from `tune_source` when given (up to `tune_queries` of them, sampled). Else, with `hold_tail`
    (a build, which can tune before the last rows are added): the last `tune_queries` rows (at most a quarter of
    the corpus), held out of the index while it is tuned (`HeldTail`, `TuneQueries.hold_from`), with ground truth
    over the rows before them — queries the index has never seen, as a user's are. Else (an index that already
    holds every row): stand-ins made from held-out database vectors (tune.py `stand_in_queries`).
    docs/tuning.md#stand-in-queries compares these choices on real embeddings. Ground truth is exact search
    over the corpus (torch on CUDA if present)."""
    rng = np.random.default_rng(config.seed + 1)
    exact = None
    if gpu_mod.cuda_device_count() > 0:
        exact = gpu_mod.torch_topk_blocks
    blocks = lambda: (v for v, _ in source.blocks(config.block_rows))  # noqa: E731
    if tune_source is not None:
        if tune_source.dim != source.dim:
            raise ValueError(f"--tune-queries vectors have dim {tune_source.dim}, the corpus {source.dim}")
        nq = min(config.tune_queries, tune_source.num_rows)
        rows = np.sort(rng.choice(tune_source.num_rows, size=nq, replace=False))
        q = tune_source.take(rows)
        return make_tune_queries(
            blocks, q, config.k, kind="cross-modal queries (--tune-queries)", exact=exact
        )
    n = source.num_rows
    if hold_tail and n >= 4 * MIN_HELD and n - min(config.tune_queries, n // 4) >= config.k:
        start = n - min(config.tune_queries, n // 4)
        q = source.take(np.arange(start, n, dtype=np.int64))
        head = lambda: _head_blocks(source, config.block_rows, start)  # noqa: E731
        tq = make_tune_queries(head, q, config.k, kind=HELD_KIND, exact=exact)
        tq.hold_from = start
        return tq
    nq = min(config.tune_queries, n)
    rows = np.sort(rng.choice(n, size=nq, replace=False))
    return stand_in_queries(
        blocks, source.take(rows), rows.astype(np.int64), config.k, seed=config.seed, exact=exact
    )


MIN_HELD = 20  # fewer held-out rows than this say nothing about recall: stand-ins instead
HELD_KIND = "rows at the corpus's end, held out of the index while tuning"


def _head_blocks(source: VectorSource, block_rows: int, stop: int) -> Any:
    """The vectors of rows [0, stop), block by block (reading stops there)."""
    start = 0
    for vectors, _ in source.blocks(block_rows):
        if start >= stop:
            return
        yield vectors[: stop - start]
        start += len(vectors)
