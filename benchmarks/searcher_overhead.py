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


def time_paths(s: Any, q: np.ndarray, single: int, k: int, reps: int = 5) -> dict[str, float]:
    """µs per query: raw FAISS, search_vectors (Hit objects), search_arrays + its id-map rows; batch (best of `reps`
    whole-batch calls) and single (median of `single` one-query calls). The paths take turns call by call, so a
    load spike on the shared machine hits them alike."""
    idx, qs = s.cpu_index, q[:single]
    paths = {
        "raw": lambda v: idx.search(v, k),
        "search_vectors": lambda v: s.search_vectors(v, k=k),
        "search_arrays": lambda v: s.search_arrays(v, k=k).rows,
    }
    if not hasattr(s, "search_arrays"):  # the code before the columnar path: time what it has
        del paths["search_arrays"]
    batch: dict[str, list[float]] = {name: [] for name in paths}
    one: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(reps):
        for name, fn in paths.items():
            batch[name].append(best_of(lambda fn=fn: fn(q), 1))
    for v in qs:
        for name, fn in paths.items():
            one[name].append(best_of(lambda fn=fn, v=v: fn(v[None]), 1))
    out: dict[str, float] = {"batch_queries": len(q)}
    out |= {f"{name}_batch_us": min(t) / len(q) * 1e6 for name, t in batch.items()}
    out |= {f"{name}_single_us": float(np.median(t)) * 1e6 for name, t in one.items()}
    return out


def flat_sweep(n: int, d: int, counts: list[int], k: int, threads: int) -> list[dict[str, Any]]:
    """ms per call of FAISS's flat search and of the matmul path, per query count: where MATMUL_MAX_QUERIES comes
    from."""
    import faiss

    from uniretrieve.search.flat import FlatMatmul

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(d)
    index.add(x)
    mm = FlatMatmul.of(index)
    rows = []
    for nq in counts:
        q = rng.standard_normal((nq, d)).astype(np.float32)
        reps = max(3, 64 // nq)
        row = {
            "queries": nq,
            "faiss_ms": best_of(lambda q=q: index.search(q, k), reps) * 1e3,
            "matmul_ms": best_of(lambda q=q: mm.search(q, k), reps) * 1e3,
        }
        rows.append(row)
        print(json.dumps({a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()}), flush=True)
    return rows


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
            row = {
                "type": t,
                "factory": s.meta.factory,
                "params": s.meta.search_params,
                "n": n,
                "d": d,
                "k": k,
            }
            row.update(time_paths(s, q, single, k))
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
    ap.add_argument(
        "--flat-sweep", default=None, help="query counts, e.g. 1,2,4,...: FAISS flat vs matmul only"
    )
    a = ap.parse_args()
    if a.flat_sweep:
        rows = flat_sweep(a.n, a.d, [int(c) for c in a.flat_sweep.split(",")], a.k, a.threads)
    else:
        rows = run(a.n, a.d, a.types.split(","), a.queries, a.single, a.k, a.threads)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
