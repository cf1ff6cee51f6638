"""Search on real embeddings, uniretrieve and its peers side by side in one run: recall@10 on fresh queries, QPS
(batch and single query), build time, peak memory of the search process.

    python -m benchmarks.real_search --rows 50000 --json-out real.json --md-out real.md   # docs/benchmarks.md
    python -m benchmarks.real_search --rows 2000 --queries 100 --synthetic --no-peers     # seconds (the test)

Vectors: benchmarks/real_vectors.py (all-MiniLM-L6-v2 over real English sentences, fresh queries never in the
database), `--vectors DIR` a folder in the same layout (benchmarks/crossmodal_vectors.py: unime-tiny's caption
queries against its image embeddings; its tune.npy, held-out captions, is what uniretrieve tunes on), or with
--synthetic a small clustered matrix (tests). Rows, each measured in fresh processes (build in
one, search in another, so the search RSS is what a service would hold):

- uniretrieve: `build_index` with its defaults (auto, target recall 0.95) at each --budgets value, plus the types of
  --types at the first budget; searched through `Searcher.search_arrays` (ids, scores, id-map rows) where it exists.
- peers (benchmarks/peers.py, in --peers-python's environment): autofaiss at each budget, LanceDB default and
  tuned IVF_PQ, and the oracle (raw FAISS, the best index kind within the budget tuned on the measured queries).

The goal ratios (at recall >= the target): uniretrieve's QPS over 0.8 × the oracle's, 5 × autofaiss's and
10 × LanceDB's (batch and single), with the RSS beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import child_row, load_data, measure, reset_peak, rss_now, rss_peak, run_peer

PEERS_PYTHON = "/work/venvs/peers/bin/python"
GOALS = {"oracle": 0.8, "autofaiss": 5.0, "lancedb-tuned": 10.0}
MiB = 2**20


def synthetic(rows: int, queries: int, out: Path, dim: int = 64) -> Path:
    """A small clustered set in the layout of benchmarks/real_vectors.py (db, queries, exact top-100)."""
    from benchmarks.real_vectors import exact_top

    if (out / "gt_ids.npy").exists():
        return out
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    x = centres[rng.integers(0, 50, rows + queries)] + 0.7 * rng.standard_normal((rows + queries, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q, db = x[:queries], x[queries:]
    gt_s, gt_i = exact_top(db, q, min(100, rows))
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("db", db), ("queries", q), ("gt_scores", gt_s), ("gt_ids", gt_i)):
        np.save(out / f"{name}.npy", arr)
    return out


# --- uniretrieve's rows (children) ------------------------------------------------------------------------------
def build_child(data: Path, index_dir: Path, index_type: str, budget: int, target: float) -> dict[str, Any]:
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ArraySource

    db = np.load(data / "db.npy")
    lines: list[str] = []
    base = rss_now()
    reset_peak()
    t0 = time.perf_counter()
    cfg = BuildConfig(index_type=index_type, memory_budget=budget, target_recall=target)
    tune = data / "tune.npy"  # held-out real queries (benchmarks/crossmodal_vectors.py): `--tune-queries`
    meta = build_index(
        ArraySource(db),
        index_dir,
        cfg,
        tune_source=ArraySource(np.load(tune)) if tune.exists() else None,
        overwrite=True,
        log=lines.append,
    )
    return {
        "build_s": round(time.perf_counter() - t0, 2),
        "build_rss_over_base_bytes": rss_peak() - base,
        "config": f"{meta.factory}, {', '.join(f'{k}={v}' for k, v in meta.search_params.items()) or 'exact'}",
        "promised_recall": meta.tuning.get("recall"),
        "tuned_on": meta.tuning.get("query_kind"),
        "build_log": [x for x in lines if "recall" in x or "NOT" in x or "budget" in x][-4:],
    }


def search_child(data: Path, index_dir: Path, k: int) -> dict[str, Any]:
    """Searcher's columnar path where it has one (`search_arrays`: ids, scores and the hits' id-map rows from the
    hit store), else `search_vectors`; the batch through `search_vectors` (one `Hit` object per hit) beside it."""
    import faiss  # loaded before the base, as the FAISS peers' search processes load it (benchmarks/peers.py)

    from uniretrieve.search.searcher import Searcher

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    d = load_data(data)
    base = rss_now()
    searcher = Searcher.load(index_dir)

    def hit_lists(q: np.ndarray, k: int) -> np.ndarray:
        hits = searcher.search_vectors(q, k=k)
        return np.array([[h.internal_id for h in r] + [-1] * (k - len(r)) for r in hits])

    def arrays(q: np.ndarray, k: int) -> np.ndarray:
        table = searcher.search_arrays(q, k=k)
        _ = table.rows  # the id-map rows of the hits are part of the answer
        return table.ids

    columnar = hasattr(searcher, "search_arrays")
    row = measure(arrays if columnar else hit_lists, d, k, base)
    t0 = time.perf_counter()
    hit_lists(d["queries"], k)
    return row | {
        "api": "search_arrays" if columnar else "search_vectors",
        "qps_batch_hit_objects": round(len(d["queries"]) / (time.perf_counter() - t0), 1),
        "disk_bytes": sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()),
    }


def run_ours(data: Path, work: Path, index_type: str, budget: int, k: int, target: float) -> dict[str, Any]:
    index_dir = work / f"uniretrieve-{index_type}-{budget}"
    row: dict[str, Any] = {"system": "uniretrieve", "type": index_type, "budget_bytes": budget}
    for stage in ("build", "search"):
        cmd = [sys.executable, "-m", "benchmarks.real_search", "--child", stage, "--data", str(data)]
        cmd += ["--index-dir", str(index_dir), "--type", index_type, "--budget", str(budget)]
        cmd += ["--k", str(k), "--target-recall", str(target)]
        row |= child_row(cmd, stage, 900)
        if "error" in row:
            return row
    return row


# --- the run ----------------------------------------------------------------------------------------------------
def jobs(args: argparse.Namespace, data: Path, budgets: list[int]) -> list[Callable[[], dict[str, Any]]]:
    """Every row of the run, budget by budget (uniretrieve's auto, the oracle, autofaiss; LanceDB, which has no
    memory budget, after the first), then the forced types: the comparisons first, should a run be cut short."""
    work, k, target = args.workdir, args.k, args.target_recall
    python = None if args.no_peers else args.peers_python
    installed = python is not None and Path(python).exists()
    out: list[Callable[[], dict[str, Any]]] = []
    for i, b in enumerate(budgets):
        out += [partial(run_ours, data, work, "auto", b, k, target)]
        out += [partial(run_peer, "oracle", data, b, work, k=k, target=target)]
        peers = ["autofaiss"] + (["lancedb-default", "lancedb-tuned"] if i == 0 else [])
        for p in peers:
            if installed:
                out.append(partial(run_peer, p, data, b, work, python=python, k=k, target=target))
            else:
                out.append(partial(dict, system=p, budget_bytes=b, error="not installed"))
    return out + [partial(run_ours, data, work, t, budgets[0], k, target) for t in args.types.split(",") if t]


def goal_ratios(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """For each uniretrieve row at or above the target: its QPS over goal × each peer's (same budget for the oracle
    and autofaiss, LanceDB at any), > 1 meaning the goal is met."""
    out = []
    for ours in (r for r in rows if r["system"] == "uniretrieve" and r.get("recall@10", 0) >= target):
        for peer, factor in GOALS.items():
            same = [
                r
                for r in rows
                if r["system"] == peer
                and "error" not in r
                and r.get("recall@10", 0) >= target
                and (peer.startswith("lancedb") or r["budget_bytes"] == ours["budget_bytes"])
            ]
            if not same:
                continue
            p = same[0]
            single_ref = p.get("oracle_best_single_qps") or p["qps_single"]
            out.append(
                {
                    "ours": f"{ours['type']} @ {ours['budget_bytes'] // MiB} MiB",
                    "peer": peer,
                    "batch": round(ours["qps_batch"] / (factor * p["qps_batch"]), 2),
                    "single": round(ours["qps_single"] / (factor * single_ref), 2),
                    "rss_ours_mib": round(ours["search_rss_peak_bytes"] / MiB),
                    "rss_peer_mib": round(p["search_rss_peak_bytes"] / MiB),
                }
            )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"rows {result['rows']} × {result['dim']}, {result['queries']} fresh queries, k = {result['k']}, "
        f"target {result['target']}; {result['when']}, {result['seconds']} s; load before {result['load']}, after "
        f"{result['load_after']}; OMP_NUM_THREADS={result['omp_threads']}",
        "",
        "| system | budget | index as built / tuned | recall@10 | QPS batch | QPS single | build s | search RSS MiB "
        "(over base) | on disk MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["table"]:
        name = r["system"] + (f" ({r['type']})" if r.get("type") else "")
        budget = f"{r['budget_bytes'] // MiB} MiB"
        if "error" in r:
            lines.append(f"| {name} | {budget} | **{r['error']}** | | | | | | |")
            continue
        promised = f" (promised {r['promised_recall']:.3f})" if r.get("promised_recall") is not None else ""
        hit_lists = (
            f" ({r['qps_batch_hit_objects']:,.0f} as Hit lists)" if r.get("qps_batch_hit_objects") else ""
        )
        lines.append(
            f"| {name} | {budget} | {r.get('config', '')} | {r['recall@10']:.3f}{promised} | {r['qps_batch']:,.0f}{hit_lists} | "
            f"{r['qps_single']:,.0f} | {r.get('build_s', 0):.1f} | {r['search_rss_peak_bytes'] / MiB:.0f} "
            f"({r['search_rss_over_base_bytes'] / MiB:.0f}) | {r.get('disk_bytes', 0) / MiB:.1f} |"
        )
    if result["goals"]:
        lines += [
            "",
            "| uniretrieve row | vs | batch QPS / goal | single QPS / goal | RSS MiB ours / peer |",
            "|---|---|---|---|---|",
        ]
        for g in result["goals"]:
            goal = f"{GOALS[g['peer']]}× {g['peer']}"
            lines.append(
                f"| {g['ours']} | {goal} | {g['batch']} | {g['single']} | {g['rss_ours_mib']} / {g['rss_peer_mib']} |"
            )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from uniretrieve.index.factory import parse_bytes
    from uniretrieve.io import atomic_write_json, atomic_write_text

    budgets = [parse_bytes(b) for b in args.budgets.split(",")]
    work = args.workdir
    if args.vectors is not None:
        data = args.vectors
    elif args.synthetic:
        data = synthetic(args.rows, args.queries, work / f"synthetic-{args.rows}-{args.queries}")
    else:
        from benchmarks.real_vectors import prepare

        data = prepare(args.rows, args.queries, args.cache)
    load, started = os.getloadavg(), time.time()
    db_shape = np.load(data / "db.npy", mmap_mode="r").shape
    rows: list[dict[str, Any]] = []
    for job in jobs(
        args, data, budgets
    ):  # the files are rewritten after every row: a stopped run keeps its rows
        rows.append(job())
        result = {
            "rows": db_shape[0],
            "dim": db_shape[1],
            "queries": int(np.load(data / "queries.npy", mmap_mode="r").shape[0]),
            "k": args.k,
            "target": args.target_recall,
            "data": str(data),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "load": " ".join(f"{x:.2f}" for x in load),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "seconds": round(time.time() - started),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "table": rows,
            "goals": goal_ratios(rows, args.target_recall),
        }
        if args.json_out:
            atomic_write_json(args.json_out, result)
        if args.md_out:
            atomic_write_text(args.md_out, markdown(result))
        print(json.dumps(rows[-1], default=str)[:600], flush=True)
    print(markdown(result))
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--budgets", default="1GB,20MB", help="uniretrieve auto and the peers at each")
    ap.add_argument("--types", default="hnsw,ivf", help="forced index types, at the first budget")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=Path("/work/benchcache"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/uniretrieve-real-search"))
    ap.add_argument("--peers-python", default=PEERS_PYTHON)
    ap.add_argument(
        "--no-peers", action="store_true", help="oracle only; the other peers' rows say not installed"
    )
    ap.add_argument(
        "--synthetic", action="store_true", help="small clustered vectors instead of MiniLM (tests)"
    )
    ap.add_argument(
        "--vectors",
        type=Path,
        default=None,
        help="a prepared folder (db/queries/gt .npy, e.g. benchmarks/crossmodal_vectors.py) instead of MiniLM",
    )
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    ap.add_argument("--child", choices=["build", "search"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--index-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--type", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, default=1 << 30, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "build":
        print(json.dumps(build_child(args.data, args.index_dir, args.type, args.budget, args.target_recall)))
    elif args.child == "search":
        print(json.dumps(search_child(args.data, args.index_dir, args.k)))
    else:
        run(args)


if __name__ == "__main__":
    main()
