"""The oracle row of the real-embedding search benchmark: raw FAISS, the best index the build could have chosen.

Every kind of index/kinds.py that fits the memory budget (by its own memory formula), in a few layouts each, built
with the build's settings (inner product, HNSW M and efConstruction of BuildConfig, PQ without polysemous training),
its knob set to the smallest value that reaches the target recall on the measured queries themselves: an upper
bound no tuner that has not seen the queries can beat. Runs in uniretrieve's environment (it reads the kinds table);
benchmarks/peers.py then searches the winner in a fresh process for its RSS.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import faiss_search_fn, recall, timed_queries, tune_min


def layouts(n: int, d: int, budget: int) -> list[tuple[str, Any]]:
    """(kind name, Layout) of every candidate that fits `budget` bytes."""
    from uniretrieve.index.kinds import HNSW_M, INDEX_KINDS, Layout

    # the build's default lists (BuildConfig.nlist); PQ codes of at least 4 dimensions per byte where SQ8
    # re-ranking fits (it restores the precision), else of at least 2
    default_nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    pq_ms = [m for m in (192, 128, 96, 64, 48, 32, 16, 8) if d % m == 0]
    out: list[tuple[str, Any]] = []
    for storage in ("fp32", "fp16"):
        out.append(("flat", Layout(storage=storage)))
        out.append(("hnsw", Layout(storage=storage, hnsw_m=HNSW_M)))
        out.append(("ivf", Layout(storage=storage, nlist=default_nlist)))
    for refine in (True, False):  # re-ranked codes where they fit, else plain ones
        ms = [m for m in pq_ms if (4 if refine else 2) * m <= d]
        lays = [Layout(nlist=default_nlist, pq_m=m, pq_nbits=8, refine=refine) for m in ms]
        fits = [lay for lay in lays if INDEX_KINDS["ivfpq"].memory(n, d, lay) <= budget]
        if fits:
            out.append(("ivfpq", fits[0]))
            break
    fitting = [(k, lay) for k, lay in out if INDEX_KINDS[k].memory(n, d, lay) <= budget]
    # fp16 storage only where fp32 does not fit (it is never faster on the CPU)
    fp32 = {(k, lay.nlist) for k, lay in fitting if lay.storage == "fp32" and k != "ivfpq"}
    return [
        (k, lay) for k, lay in fitting if lay.storage == "fp32" or k == "ivfpq" or (k, lay.nlist) not in fp32
    ]


def build(kind_name: str, lay: Any, db: np.ndarray) -> Any:
    import faiss

    from uniretrieve.index.kinds import INDEX_KINDS

    kind = INDEX_KINDS[kind_name]
    # one thread while building: FAISS's many short parallel regions (PQ training) crawl on a loaded 2-core machine;
    # build time is not what the oracle is compared on
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return _build(faiss, kind, lay, db)
    finally:
        faiss.omp_set_num_threads(threads)


def _build(faiss: Any, kind: Any, lay: Any, db: np.ndarray) -> Any:
    from uniretrieve.index.kinds import PQ_TRAIN_ROWS
    from uniretrieve.index.meta import BuildConfig

    index = faiss.index_factory(db.shape[1], kind.factory(lay), faiss.METRIC_INNER_PRODUCT)
    if kind.setup:
        kind.setup(index, BuildConfig().ef_construction)
    if kind.trains:
        rows = max(256 * lay.nlist, PQ_TRAIN_ROWS if kind.pq else 0)
        pick = np.random.default_rng(0).permutation(len(db))[: min(rows, len(db))]
        index.train(db[np.sort(pick)])
    index.add(db)
    return index


def oracle(d: dict[str, np.ndarray], budget: int, k: int, target: float, work: Path) -> dict[str, Any]:
    import faiss

    from uniretrieve.index.kinds import INDEX_KINDS

    db, q = d["db"], d["queries"]
    candidates = []
    for kind_name, lay in layouts(len(db), db.shape[1], budget):
        kind = INDEX_KINDS[kind_name]
        t0 = time.perf_counter()
        index = build(kind_name, lay, db)
        build_s = time.perf_counter() - t0
        param = ""
        if kind.exact:
            value, r = 0, recall(index.search(q, k)[1], d["gt_ids"], d["gt_scores"], k)
        else:
            ps = faiss.ParameterSpace()

            def reach(v: int, index: Any = index, ps: Any = ps, name: str = kind.param) -> tuple[float, bool]:
                ps.set_index_parameters(index, f"{name}={v}")
                r = recall(index.search(q, k)[1], d["gt_ids"], d["gt_scores"], k)
                return r, r >= target

            ladder = kind.knob.candidates(lay.nlist, k)
            if kind.graph:
                ladder = sorted({k, *ladder})
            value, r = tune_min(ladder, reach)
            param = f"{kind.param}={value}"
            ps.set_index_parameters(index, param)
        _, batch, single = timed_queries(faiss_search_fn(index), q, k)
        candidates.append(
            {
                "factory": kind.factory(lay),
                "kind": kind_name,
                "param": param,
                "recall@10": round(r, 4),
                "qps_batch": round(batch, 1),
                "qps_single": round(single, 1),
                "build_s": round(build_s, 2),
                "index_bytes": int(faiss.serialize_index(index).size),
                "_index": index,
            }
        )
    ok = [c for c in candidates if c["recall@10"] >= target]
    best = max(ok, key=lambda c: c["qps_batch"]) if ok else max(candidates, key=lambda c: c["recall@10"])
    faiss.write_index(best["_index"], str(work / "knn.index"))
    (work / "infos.json").write_text(json.dumps({"index_key": best["factory"], "index_param": best["param"]}))
    for c in candidates:
        del c["_index"]
    return {
        "build_s": best["build_s"],
        "oracle_best_single_qps": max((c["qps_single"] for c in ok), default=None),
        "candidates": candidates,
    }
