"""Which tuning queries predict recall on fresh queries? Candidate stand-ins for real queries, built from database
vectors only, against queries the index never saw, on real embeddings.

    python benchmarks/tune_queries.py --db db.npy --queries queries.npy --out tune_queries.json
    python benchmarks/tune_queries.py --db db.npy --queries queries.npy --kinds "" --promise hnsw,ivf

db.npy / queries.npy: float32 unit rows, the queries fresh (not database rows). The indexes are built once on the
database (and once more without the held-out rows, for the "removed" reference); each candidate's recall@k is
measured at every value of the knob's ladder, next to the fresh queries' recall at the same value, and the value each
candidate would tune to (smallest whose lower bound reaches the target, index/tune.py) is reported with the recall the
fresh queries get there. Held-out vectors are the database's last rows. Candidates (docs/tuning.md#stand-in-queries):

- loo: held-out database vectors, their own row excluded from both exact and ANN results (the old rule);
- removed: held-out vectors taken out of the index (and out of the exact ground truth): the true held-out set, what
  the build does (index/build.py `HeldTail`: the last rows, added after tuning);
- iso: held-out vectors turned away from themselves by the angle to their nearest other database vector, in a random
  direction; their own row stays in (a fresh query has a nearest neighbour at that distance): tune.py's
  `stand_in_queries`, what the build uses;
- data: as iso, the direction drawn from the database's covariance (noise along the directions the data varies in).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FACTORIES = {"hnsw": "HNSW32,Flat", "ivf": "IVF{nlist},Flat", "ivfpq": "IVF{nlist},PQ{m}"}


def build(factory: str, x: np.ndarray, threads: int) -> Any:
    import faiss

    from uniretrieve.index.kinds import INDEX_KINDS

    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("HNSW"):
        index.hnsw.efConstruction = 80
    if ",PQ" in factory:
        INDEX_KINDS["ivfpq"].setup(index, 80)
    if not index.is_trained:
        index.train(x[np.random.default_rng(0).choice(len(x), min(len(x), 65536), replace=False)])
    index.add(x)
    return index


def stand_ins(db: np.ndarray, held: np.ndarray, k: int, seed: int) -> dict[str, dict[str, Any]]:
    """name → {queries, gt (scores, ids), exclude, removed}: the candidate tuning-query sets."""
    from uniretrieve.index.exact import exact_search
    from uniretrieve.index.tune import turn

    rng = np.random.default_rng(seed)
    x = db[held]
    loo_s, loo_i = exact_search([db], x, 2 * k, exclude=held)
    nn_cos = loo_s[:, 0]  # similarity of each held-out vector to its nearest other database vector
    keep = np.ones(len(db), bool)
    keep[held] = False
    rem_s, rem_i = exact_search([db[keep]], x, 2 * k)
    sample = db[rng.choice(len(db), min(len(db), 20000), replace=False)]
    cov_l = np.linalg.cholesky(np.cov(sample.T) + 1e-6 * np.eye(db.shape[1])).astype(np.float32)
    out = {
        "loo": {"queries": x, "gt": (loo_s, loo_i), "exclude": held, "removed": False},
        "removed": {"queries": x, "gt": (rem_s, rem_i), "exclude": None, "removed": True},
    }
    for name, u in (
        ("iso", rng.standard_normal(x.shape).astype(np.float32)),
        ("data", rng.standard_normal(x.shape).astype(np.float32) @ cov_l.T),
    ):
        q = turn(x, u, nn_cos)
        out[name] = {"queries": q, "gt": exact_search([db], q, 2 * k), "exclude": None, "removed": False}
    return out


def recall_at(index: Any, param: str, value: int, qset: dict[str, Any], k: int) -> tuple[float, float]:
    from uniretrieve.index.exact import recall_per_query
    from uniretrieve.index.tune import _drop_excluded, recall_bound, set_param

    set_param(index, param, value)
    ex = qset["exclude"]
    _, ids = index.search(qset["queries"], k + (ex is not None))
    if ex is not None:
        ids = _drop_excluded(ids, ex, k)
    return recall_bound(recall_per_query(ids, qset["gt"][1], qset["gt"][0], k), k)


def run(db: np.ndarray, fresh: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from uniretrieve.index.exact import exact_search
    from uniretrieve.index.factory import default_nlist
    from uniretrieve.index.kinds import INDEX_KINDS

    faiss.omp_set_num_threads(args.threads)
    k, n = args.k, len(db)
    # the last rows, as the build holds out (a random sample where the database's order is random, as here)
    held = np.arange(n - args.held, n, dtype=np.int64)
    keep = np.ones(n, bool)
    keep[held] = False
    sets = stand_ins(db, held, k, args.seed)
    fresh_q = fresh[: args.fresh]
    sets["fresh"] = {
        "queries": fresh_q,
        "gt": exact_search([db], fresh_q, 2 * k),
        "exclude": None,
        "removed": False,
    }
    nlist = default_nlist(n)
    report: dict[str, Any] = {
        "n": n,
        "d": db.shape[1],
        "k": k,
        "held": args.held,
        "fresh": len(fresh_q),
        "kinds": {},
    }
    for kind in args.kinds.split(","):
        factory = FACTORIES[kind].format(nlist=nlist, m=args.pq_m)
        knob = INDEX_KINDS[kind].knob
        t0 = time.perf_counter()
        full, part = build(factory, db, args.threads), build(factory, db[keep], args.threads)
        rows = []
        for v in knob.candidates(nlist, k):
            row: dict[str, Any] = {"value": v}
            for name, qs in sets.items():
                rec, low = recall_at(part if qs["removed"] else full, knob.name, v, qs, k)
                row[name], row[name + "_lower"] = round(rec, 4), round(low, 4)
            rows.append(row)
        summary = {}
        for name in sets:
            if name == "fresh":
                continue
            band = [r for r in rows if 0.6 <= r["fresh"] <= 0.995]
            chosen = next((r for r in rows if r[name + "_lower"] >= args.target), rows[-1])
            summary[name] = {
                "mean_abs_gap": round(float(np.mean([abs(r[name] - r["fresh"]) for r in band])), 4)
                if band
                else None,
                "mean_gap": round(float(np.mean([r[name] - r["fresh"] for r in band])), 4) if band else None,
                f"tuned_{knob.name}": chosen["value"],
                "fresh_recall_there": chosen["fresh"],
            }
        report["kinds"][kind] = {
            "factory": factory,
            "rows": rows,
            "summary": summary,
            "seconds": time.perf_counter() - t0,
        }
        print(json.dumps({"kind": kind, "factory": factory, "summary": summary}), flush=True)
    return report


def promise_rows(db: np.ndarray, fresh: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The build's own tuner end to end: `build_index` (--type hnsw / ivf, target recall, the stand-in queries), then
    recall@k of fresh queries through `Searcher`, unfiltered and with `where` filters passing ~20 % and ~2 % of rows
    (exact ground truth over the passing rows)."""
    import tempfile

    from uniretrieve.index.build import build_index
    from uniretrieve.index.exact import exact_search, recall_at_k
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ArraySource
    from uniretrieve.search.searcher import Searcher

    k = args.k
    width = np.random.default_rng(args.seed).integers(0, 1000, len(db))
    src = ArraySource(db, extra_columns={"width": width.tolist()})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.promise.split(","):
            cfg = BuildConfig(index_type=kind, target_recall=args.target, k=k, gpu=False)
            meta = build_index(src, Path(tmp) / kind, cfg, log=lambda m: None)
            with Searcher.load(Path(tmp) / kind) as s:
                for where, allowed in (
                    (None, None),
                    ("width < 200", width < 200),
                    ("width < 20", width < 20),
                ):
                    hits = s.search(vectors=fresh, k=k, where=where)
                    found = np.array([[h.internal_id for h in r] + [-1] * (k - len(r)) for r in hits])
                    gs, gi = exact_search([db], fresh, 2 * k, allowed=allowed)
                    row = {
                        "type": kind,
                        "factory": meta.factory,
                        "tuned": meta.search_params,
                        "promised_lower": round(meta.tuning["recall_lower"], 4),
                        "where": where,
                        "fresh_recall": round(recall_at_k(found, gi, gs, k), 4),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--kinds", default="hnsw,ivf,ivfpq")
    ap.add_argument(
        "--held", type=int, default=500, help="held-out database vectors (the build's tune_queries)"
    )
    ap.add_argument("--fresh", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--pq-m", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--promise", default="", help="also build these types with the tuner and measure fresh recall"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    db = np.load(args.db).astype(np.float32)
    fresh = np.load(args.queries).astype(np.float32)[: args.fresh]
    report = run(db, fresh, args) if args.kinds else {}
    if args.promise:
        report["promise"] = promise_rows(db, fresh, args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
