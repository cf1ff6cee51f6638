"""Exact search for few queries as a BLAS matmul over the flat index's own vectors (no copy).

FAISS's flat search answers a few queries with its own scan kernel, which is slow for one query (~17 ms at 90,000 ×
384 on the reference machine); a numpy matmul + argpartition over the same memory is faster there, while for large
batches FAISS's fused scan + heap beats the matmul's separate [nq, N] score matrix and argpartition. The switch
point, MATMUL_MAX_QUERIES, is measured: benchmarks/searcher_overhead.py --flat-sweep times both per query count
(benchmarks/RESULTS.md#searcher-overhead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCORE_FLOATS = 1 << 24  # scores per matmul block ([nq, rows], 64 MB): bounds the extra memory of a call
# The matmul answers up to this many queries per call, FAISS more (measured crossover: between 512 and 2,000
# queries at 90,000 × 384, benchmarks/RESULTS.md#searcher-overhead).
MATMUL_MAX_QUERIES = 256
MIN_BLOCK_ROWS = 4096


class FlatMatmul:
    """Top-k inner products of queries against a CPU `IndexFlatIP`'s vectors, read in place."""

    def __init__(self, vectors: np.ndarray, max_queries: int = MATMUL_MAX_QUERIES) -> None:
        self.vectors = vectors
        self.max_queries = max_queries

    @classmethod
    def of(cls, index: Any) -> FlatMatmul | None:
        """The matmul path for a float32 inner-product flat index; None for any other index (fp16 storage
        would need a float32 copy of the whole database)."""
        import faiss

        if type(index) is not faiss.IndexFlatIP or index.ntotal == 0:
            return None
        n, d = int(index.ntotal), int(index.d)
        view = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)  # the index's own memory
        return cls(view)

    def faster(self, nq: int) -> bool:
        return nq <= self.max_queries

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) [nq, k], best first; ties by the smaller id; -inf / -1 past the database's end."""
        from uniretrieve.index.exact import exact_search

        x = self.vectors
        rows = max(MIN_BLOCK_ROWS, SCORE_FLOATS // max(1, len(q)))
        return exact_search((x[s : s + rows] for s in range(0, len(x), rows)), q, k)
