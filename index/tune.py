"""Tune nprobe (IVF, IVF-PQ) or efSearch (HNSW) to the smallest value whose recall@k against exact search reaches a
target with confidence, optionally under a per-query latency budget, and record what was achieved.

The sampled recall is a mean over a few hundred queries, so one sample's noise could pass a value whose true recall is
below the target. A value passes when the one-sided 95 % LOWER bound of its recall reaches the target (`recall_bound`:
the smaller of a normal bound over per-query recalls, which accounts for the k neighbours of one query succeeding or
failing together, and a Wilson bound over the queries × k neighbour pairs, which stays below 1 when every sampled pair
was found). docs/tuning.md#the-rule has the rule and the measurements behind it.

Unlike autofaiss (criteo/autofaiss external/optimize.py), which searches for the largest parameter under a latency
budget and only reports recall afterwards — measured with database vectors as their own queries — the target here
is recall, and queries are either real cross-modal queries (`--tune-queries` shards, e.g. encoded captions for an
image index) or held-out database vectors searched leave-one-out (the query's own row is excluded from both the
exact and the ANN results, so it cannot inflate recall).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from uniretrieve.index.exact import exact_search, recall_per_query
from uniretrieve.index.kinds import kind_of

LATENCY_QUERIES = 32
CONFIDENCE_Z = 1.645  # one-sided 95 %


@dataclass
class TuneQueries:
    """Queries with their exact top-(2k) (extra columns let tie-aware recall count ties past rank k)."""

    vectors: np.ndarray
    gt_ids: np.ndarray
    gt_scores: np.ndarray
    kind: str
    """"cross-modal queries from <dirs>" or "held-out database vectors (leave-one-out)"."""
    exclude: np.ndarray | None = None
    """Per query the internal id to drop from the ANN results (leave-one-out), or None."""
    hold_from: int | None = None
    """The queries are the corpus's rows from here on: the index is tuned before they are added (holdout.HeldTail)."""


@dataclass
class TuneResult:
    param: str
    value: int
    recall: float
    latency_ms: float
    target: float
    reached: bool
    k: int
    queries: int
    query_kind: str
    latency_budget_ms: float | None = None
    note: str = ""
    sweep: list[dict[str, float]] = field(default_factory=list)
    recall_lower: float = float("nan")
    """One-sided 95 % lower bound of `recall` over the sampled queries (`recall_bound`): what `reached` tests."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def search_params(self) -> dict[str, int]:
        return {self.param: self.value} if self.param else {}


def make_tune_queries(
    blocks: Callable[[], Any],
    queries: np.ndarray,
    k: int,
    *,
    kind: str,
    exclude: np.ndarray | None = None,
    exact: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> TuneQueries:
    """Exact ground truth for `queries` over the database streamed by `blocks()` (one more pass over the shards).

    exact: the exact-search function (index/exact.py's numpy version, or gpu.py's torch one on CUDA).
    """
    fn = exact or exact_search
    gt_s, gt_i = fn(blocks(), queries, 2 * k, exclude=exclude)
    return TuneQueries(np.ascontiguousarray(queries, np.float32), gt_i, gt_s, kind, exclude)


STAND_IN_KIND = "held-out database vectors turned to their nearest-neighbour distance"


def stand_in_queries(
    blocks: Callable[[], Any],
    held: np.ndarray,
    rows: np.ndarray,
    k: int,
    *,
    seed: int,
    exact: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> TuneQueries:
    """Queries that behave like fresh ones, made from held-out database vectors `held` (rows `rows`): each is turned
    away from itself, in a random direction, by the angle to its nearest OTHER database vector, so its nearest
    neighbour (itself, kept in) lies as far as a fresh query's does; ground truth is exact search for the turned
    vectors. A vector searched as itself lands on its own graph node or list and finds its neighbours too easily:
    on real embeddings leave-one-out promised 0.95 where fresh queries got 0.887 (docs/tuning.md#stand-in-queries
    has the comparison that chose this)."""
    fn = exact or exact_search
    nn_cos, _ = fn(blocks(), held, 1, exclude=rows)
    u = np.random.default_rng(seed).standard_normal(held.shape).astype(np.float32)
    q = turn(held, u, nn_cos[:, 0])
    return make_tune_queries(blocks, q, k, kind=STAND_IN_KIND, exact=fn)


def turn(x: np.ndarray, u: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Unit vectors at cosine `cos` from the rows of unit `x`, towards the part of `u` orthogonal to them."""
    u = u - (u * x).sum(1, keepdims=True) * x
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    c = np.clip(np.nan_to_num(cos, nan=1.0, neginf=1.0), -1.0, 1.0)[:, None]  # no other vector: stay put
    out = c * x + np.sqrt(1.0 - c * c) * u
    return np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float32)


def set_param(index: Any, param: str, value: int) -> None:
    """Set nprobe / efSearch on any wrapping (IndexPreTransform for OPQ, GPU shards) via FAISS's ParameterSpace."""
    import faiss

    if not param:
        return
    space = faiss.GpuParameterSpace() if _is_gpu(index) else faiss.ParameterSpace()
    space.set_index_parameter(index, param, value)


def _is_gpu(index: Any) -> bool:
    return (
        "Gpu" in type(index).__name__
        or "Shards" in type(index).__name__
        or "Replicas" in type(index).__name__
    )


def candidates(index_type: str, nlist: int, k: int) -> list[int]:
    """Ascending values to try: powers of two up to nlist (nprobe), or 16 … 4096 and at least k (efSearch)."""
    return kind_of(index_type).knob.candidates(nlist, k)


def recall_bound(per_query: np.ndarray, k: int, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    """(mean recall, one-sided lower confidence bound) of per-query recalls over k neighbours each."""
    n = len(per_query)
    mean = float(per_query.mean())
    if n < 2:
        return mean, 0.0
    clt = mean - z * float(per_query.std(ddof=1)) / math.sqrt(n)
    return mean, max(0.0, min(clt, wilson_lower(mean, n * k, z)))


def wilson_lower(p: float, trials: int, z: float = CONFIDENCE_Z) -> float:
    """Wilson score interval's lower end for a success rate `p` observed over `trials` (Wilson 1927, JASA 22)."""
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return (centre - spread) / (1 + z2 / trials)


def measure(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    tq: TuneQueries,
    k: int,
    *,
    latency: bool,
) -> tuple[float, float, float]:
    """(recall@k, its lower bound, median single-query latency in ms or nan) of `search(queries, k)` on the
    tuning queries."""
    fetch = k + 1 if tq.exclude is not None else k
    _, ids = search(tq.vectors, fetch)
    if tq.exclude is not None:
        ids = _drop_excluded(ids, tq.exclude, k)
    rec, low = recall_bound(recall_per_query(ids, tq.gt_ids, tq.gt_scores, k), k)
    lat = float("nan")
    if latency:
        times = []
        for q in tq.vectors[:LATENCY_QUERIES]:
            t0 = time.perf_counter()
            search(q[None, :], fetch)
            times.append((time.perf_counter() - t0) * 1000)
        lat = float(np.median(times))
    return rec, low, lat


def _drop_excluded(ids: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    out = np.full((ids.shape[0], k), -1, np.int64)
    for r in range(ids.shape[0]):
        row = ids[r][ids[r] != exclude[r]][:k]
        out[r, : len(row)] = row
    return out


PLATEAU_TOLERANCE = 0.005
"""recall@k an unreachable target's choice may give up against the best measured value, for speed."""


def _plateau_start(
    results: dict[int, tuple[float, float, float]],
    fits: list[int],
    best: int,
    at: Callable[[int, bool], tuple[float, float, float]],
    latency: bool,
) -> int:
    """When the target is out of reach: the smallest value whose measured recall is within PLATEAU_TOLERANCE of the
    best value's, and not below the best's lower confidence bound. Recall plateaus (PQ codes cap it), and the
    largest nprobe buys the last 0.0005 of it at several times the cost (measured: 20 MB IVF-PQ on real
    embeddings, nprobe 1,024 where 305 gives the same recall on fresh queries). Bisects between the powers of two."""
    floor = max(results[best][1], results[best][0] - PLATEAU_TOLERANCE)
    ok = sorted(v for v in fits if results[v][0] >= floor)
    if not ok:
        return best
    hi = ok[0]
    below = [v for v in results if v < hi]
    a = max(below) if below else None
    if a is not None:
        b = hi
        while b - a > 1:
            mid = (a + b) // 2
            if mid not in results:
                results[mid] = at(mid, latency)
            if results[mid][0] >= floor:
                b = mid
            else:
                a = mid
        hi = b
    return hi


def tune(
    index: Any,
    index_type: str,
    tq: TuneQueries,
    *,
    target: float,
    k: int = 10,
    nlist: int = 0,
    latency_ms: float | None = None,
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> TuneResult:
    """The smallest parameter whose recall@k lower bound reaches `target` (bisection between the powers of two that
    bracket it); with a latency budget, the best recall whose latency fits. The index is left set to the chosen
    value."""
    param = kind_of(index_type).param
    run = search or (lambda q, kk: index.search(q, kk))
    sweep: list[dict[str, float]] = []

    def at(value: int, latency: bool) -> tuple[float, float, float]:
        set_param(index, param, value)
        rec, low, lat = measure(run, tq, k, latency=latency)
        sweep.append(
            {
                "value": value,
                "recall": round(rec, 5),
                "recall_lower": round(low, 5),
                **({"latency_ms": round(lat, 4)} if latency else {}),
            }
        )
        return rec, low, lat

    def passes(r: tuple[float, float, float]) -> bool:
        return r[1] >= target and (latency_ms is None or r[2] <= latency_ms)

    if not param:  # flat: exact by construction, measured anyway so a broken index cannot pass silently
        rec, low, lat = at(0, True)
        return TuneResult(
            "", 0, rec, lat, target, rec >= target, k, len(tq.vectors), tq.kind, latency_ms, sweep=sweep,
            recall_lower=low,
        )  # fmt: skip

    vals = candidates(index_type, nlist, k)
    lo, hi = None, None  # last failing value, first passing value
    results: dict[int, tuple[float, float, float]] = {}
    for v in vals:
        results[v] = at(v, latency_ms is not None)
        if latency_ms is not None and results[v][2] > latency_ms:
            break
        if results[v][1] >= target:
            hi = v
            break
        lo = v
    if hi is not None and lo is not None and hi - lo > 1:
        a, b = lo, hi  # bound(a) < target <= bound(b); bisect for the smallest passing value
        while b - a > 1:
            mid = (a + b) // 2
            results[mid] = at(mid, latency_ms is not None)
            if passes(results[mid]):
                b = mid
            else:
                a = mid
        hi = b
    note = ""
    if hi is None:
        fits = [v for v, r in results.items() if latency_ms is None or r[2] <= latency_ms]
        best = max(fits, key=lambda v: (results[v][1], -v)) if fits else min(results)
        hi = _plateau_start(results, fits, best, at, latency_ms is not None)
        note = (
            f"target recall {target} not reached"
            + (f" within {latency_ms} ms" if latency_ms is not None else "")
            + f"; best {param}={best} gives {results[best][0]:.4f} (lower bound {results[best][1]:.4f})"
            + (
                f"; chose {param}={hi} ({results[hi][0]:.4f}), the smallest within {PLATEAU_TOLERANCE} of it"
                if hi != best
                else ""
            )
        )
    rec, low, lat = at(hi, True)
    return TuneResult(
        param,
        hi,
        rec,
        lat,
        target,
        low >= target and (latency_ms is None or lat <= latency_ms),
        k,
        len(tq.vectors),
        tq.kind,
        latency_ms,
        note,
        sweep,
        recall_lower=low,
    )
