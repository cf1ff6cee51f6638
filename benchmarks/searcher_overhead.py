"""Searcher overhead: time per query of `Searcher` (hits included) against raw FAISS on the same index, same
parameters, same queries — batch (all queries in one call) and single query (one call per query).

    python benchmarks/searcher_overhead.py                    # 90,000 × 384, flat / hnsw / ivf, 2 FAISS threads
    python benchmarks/searcher_overhead.py --n 20000 --types flat --out overhead.json

Random unit vectors are enough here: the overhead is per call and per hit, not per distance. Searcher paths timed:
`search_vectors` (the list[list[Hit]] API), `search_arrays` (columnar hits: ids, scores and id-map rows as Arrow
columns) and, for an exact index, FAISS's one-query path against the BLAS matmul Searcher picks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# The parameters of the real-embedding table this overhead was first measured at (HNSW32 efSearch 16, IVF1024 nprobe
# 104); random vectors would tune far higher, hiding the per-call overhead behind a slower search.
FIXED_PARAMS = {"hnsw": {"efSearch": 16}, "ivf": {"nprobe": 104}}


def best_of(fn: Any, repeats: int) -> float:
    """Best wall time of `repeats` calls (s): the least-disturbed run on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n: int, d: int, types: list[str], nq: int, single: int, k: int, threads: int) -> list[dict[str, Any]]:
    import faiss

    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ArraySource
    from uniretrieve.index.tune import set_param
    from uniretrieve.search.searcher import Searcher

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    src = ArraySource(x, extra_columns={"text": [f"item {i}" for i in range(n)]})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in types:
            out = Path(tmp) / t
            cfg = BuildConfig(index_type=t, gpu=False, tune_queries=100, target_recall=0.9)
            build_index(src, out, cfg, log=lambda m: None)
            s = Searcher.load(out)
            idx = s.cpu_index
            fixed = FIXED_PARAMS.get(t, {})
            for name, value in fixed.items():  # the issue-table parameters, the same on both sides
                set_param(idx, name, value)
                s.meta.search_params[name] = value
            reps = 3
            raw_b = best_of(lambda: idx.search(q, k), reps)
            vec_b = best_of(lambda: s.search_vectors(q, k=k), reps)
            arr_b = (
                best_of(lambda: s.search_arrays(q, k=k).rows, reps) if hasattr(s, "search_arrays") else None
            )
            qs = q[:single]
            raw_1 = best_of(lambda: [idx.search(v[None], k) for v in qs], reps) / single
            vec_1 = best_of(lambda: [s.search_vectors(v[None], k=k) for v in qs], reps) / single
            arr_1 = (
                best_of(lambda: [s.search_arrays(v[None], k=k).rows for v in qs], reps) / single
                if hasattr(s, "search_arrays")
                else None
            )
            row = {
                "type": t,
                "factory": s.meta.factory,
                "params": s.meta.search_params,
                "n": n,
                "d": d,
                "k": k,
                "batch_queries": nq,
                "raw_batch_us": raw_b / nq * 1e6,
                "search_vectors_batch_us": vec_b / nq * 1e6,
                "search_arrays_batch_us": None if arr_b is None else arr_b / nq * 1e6,
                "raw_single_us": raw_1 * 1e6,
                "search_vectors_single_us": vec_1 * 1e6,
                "search_arrays_single_us": None if arr_1 is None else arr_1 * 1e6,
            }
            rows.append(row)
            print(
                json.dumps({k2: (round(v, 1) if isinstance(v, float) else v) for k2, v in row.items()}),
                flush=True,
            )
            s.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=90_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--types", default="flat,hnsw,ivf")
    ap.add_argument("--queries", type=int, default=2000, help="batch size")
    ap.add_argument("--single", type=int, default=200, help="single-query calls timed")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    a = ap.parse_args()
    rows = run(a.n, a.d, a.types.split(","), a.queries, a.single, a.k, a.threads)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
