"""The peers of the real-embedding search benchmark, each measured on the same .npy vectors as uniretrieve.

    <python> benchmarks/peers.py autofaiss --data DIR --budget 1GB --workdir W     # one JSON row on stdout
    <python> benchmarks/peers.py lancedb-default | lancedb-tuned | oracle ...

A peer runs as a subprocess of the Python that has it installed (autofaiss and LanceDB pin other numpy/pyarrow
versions than uniretrieve, so they live in their own virtual environment, benchmarks/real_search.py --peers-python);
this file imports neither uniretrieve nor anything beyond numpy and the peer itself, except the oracle, which reads
the table of index kinds (index/kinds.py) and so runs in uniretrieve's environment.

Every peer is built in one process and searched in another, fresh one, so the search process's peak RSS is what a
service answering queries from that index would hold. Recall@10 is tie-aware against the exact top-100 in DIR
(benchmarks/real_vectors.py); QPS "batch" is all queries in one call, "single" one query per call.

- autofaiss: `build_index` with `max_index_memory_usage` = the budget (its own choice of index and parameters).
- lancedb-default: `create_index()` with its defaults (IVF_PQ), searched with its default nprobes, no refine.
- lancedb-tuned: the same index, nprobes and refine_factor tuned on the measured queries for recall >= target.
- oracle: raw FAISS, benchmarks/oracle.py: every index kind uniretrieve's build may choose that fits the budget,
  tuned on the measured queries themselves; the fastest that reaches the target, else the one with the best recall.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

TIE_EPS = 1e-5
SINGLE_QUERIES = 200


# --- measurement helpers (standalone: the peers' environments have no uniretrieve) -------------------------------
def rss_peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def recall(found: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, k: int) -> float:
    """Tie-aware k-recall@k, the rule of index/exact.py recall_at_k (tests check they agree)."""
    kth = gt_scores[:, k - 1]
    total = 0.0
    for f, gi, gs, t in zip(found[:, :k], gt_ids, gt_scores, kth, strict=True):
        good = set(gi[gs >= t - TIE_EPS].tolist())
        total += min(k, len({int(x) for x in f if x >= 0} & good)) / k
    return total / len(found)


def load_data(data: Path) -> dict[str, np.ndarray]:
    return {n: np.load(data / f"{n}.npy") for n in ("db", "queries", "gt_ids", "gt_scores")}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """(ids of every query from one batch call, batch QPS, single-query QPS over the first SINGLE_QUERIES)."""
    search(queries[:10], k)  # warm-up
    t0 = time.perf_counter()
    ids = search(queries, k)
    batch = len(queries) / (time.perf_counter() - t0)
    m = min(SINGLE_QUERIES, len(queries))
    t0 = time.perf_counter()
    for i in range(m):
        search(queries[i : i + 1], k)
    return ids, batch, m / (time.perf_counter() - t0)


def measure(search, d: dict[str, np.ndarray], k: int, base_rss: int) -> dict[str, Any]:
    ids, batch, single = timed_queries(search, d["queries"], k)
    return {
        "recall@10": round(recall(ids, d["gt_ids"], d["gt_scores"], k), 4),
        "qps_batch": round(batch, 1),
        "qps_single": round(single, 1),
        "search_rss_peak_bytes": rss_peak(),
        "search_rss_over_base_bytes": rss_peak() - base_rss,
    }


def tune_min(values: list[int], reach) -> tuple[int, float]:
    """Smallest value in ascending `values` whose recall reaches the target, refined by bisection between the
    last failing and the first passing ladder value; (the largest value, its recall) when none does."""
    last_fail, hit = None, None
    for v in values:
        r = reach(v)
        if r[1]:
            hit = (v, r[0])
            break
        last_fail = v
    if hit is None:
        return values[-1], reach(values[-1])[0]
    lo, (hi, hi_r) = (values[0] - 1 if last_fail is None else last_fail), hit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r_mid, ok = reach(mid)
        if ok:
            hi, hi_r = mid, r_mid
        else:
            lo = mid
    return hi, hi_r


# --- the peers ---------------------------------------------------------------------------------------------------
def faiss_search_fn(index: Any):
    def search(q: np.ndarray, k: int) -> np.ndarray:
        return index.search(np.ascontiguousarray(q, dtype=np.float32), k)[1]

    return search


def autofaiss_build(d: dict[str, np.ndarray], budget: int, work: Path) -> dict[str, Any]:
    from autofaiss import build_index

    _, infos = build_index(
        embeddings=d["db"],
        index_path=str(work / "knn.index"),
        index_infos_path=str(work / "infos.json"),
        max_index_memory_usage=f"{budget // 2**20}M",
        current_memory_available="16G",
        metric_type="ip",
        verbose=30,
    )
    return {"infos": infos}


def faiss_file_search(d: dict[str, np.ndarray], work: Path, k: int, base: int) -> dict[str, Any]:
    """Search `work/knn.index` with the parameters of `work/infos.json` (autofaiss's file; the oracle writes one)."""
    import faiss

    infos = json.loads((work / "infos.json").read_text())
    index = faiss.read_index(str(work / "knn.index"))
    faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
    return {
        "config": f"{infos['index_key']}, {infos['index_param']}",
        "disk_bytes": (work / "knn.index").stat().st_size,
    } | measure(faiss_search_fn(index), d, k, base)


def lancedb_build(d: dict[str, np.ndarray], budget: int, work: Path) -> dict[str, Any]:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(work / "lance"))
    vec = pa.FixedSizeListArray.from_arrays(pa.array(d["db"].reshape(-1)), d["db"].shape[1])
    table = db.create_table(
        "v", data=pa.table({"id": np.arange(len(d["db"])), "vector": vec}), mode="overwrite"
    )
    table.create_index()  # the defaults: IVF_PQ, l2 (the same ranking as inner product on unit vectors)
    table.wait_for_index(["vector_idx"]) if hasattr(table, "wait_for_index") else None
    return {}


def lancedb_fn(table: Any, nprobes: int | None, refine: int | None):
    def search(qs: np.ndarray, k: int) -> np.ndarray:
        # one vector per query, or several in one multi-vector query (rows tagged with `query_index`)
        q = table.search(qs[0] if len(qs) == 1 else qs).limit(k).select(["id", "_distance"])
        if nprobes:
            q = q.nprobes(nprobes)
        if refine:
            q = q.refine_factor(refine)
        got = q.to_arrow()
        out = np.full((len(qs), k), -1, np.int64)
        qi = got.column("query_index").to_numpy() if len(qs) > 1 else np.zeros(got.num_rows, np.int64)
        ids, dist = got.column("id").to_numpy(), got.column("_distance").to_numpy()
        for i, row in enumerate(
            np.split(np.lexsort((dist, qi)), np.cumsum(np.bincount(qi, minlength=len(qs)))[:-1])
        ):
            out[i, : len(row)] = ids[row][:k]
        return out

    return search


def lancedb_search(d: dict[str, np.ndarray], work: Path, k: int, base: int, tuned: bool, target: float):
    import lancedb

    table = lancedb.connect(str(work / "lance")).open_table("v")
    nprobes, refine = None, None
    tuning: dict[str, Any] = {}
    if tuned:
        # every refine factor with its smallest passing nprobes on the measured queries; then the fastest of those
        passing = []
        for refine_c in (None, 2, 5, 10, 20, 50):
            for nprobes_c in (20, 50, 100, 200, 400):
                ids = lancedb_fn(table, nprobes_c, refine_c)(d["queries"], k)
                r = recall(ids, d["gt_ids"], d["gt_scores"], k)
                tuning[f"nprobes={nprobes_c},refine={refine_c}"] = round(r, 4)
                if r >= target:
                    passing.append((nprobes_c, refine_c))
                    break  # more lists at this refine only cost more
            if passing and passing[-1][0] == 20:
                break  # a larger refine only costs more
        speed = {}
        for cand in passing:
            fn = lancedb_fn(table, *cand)
            t0 = time.perf_counter()
            fn(d["queries"], k)
            speed[cand] = time.perf_counter() - t0
        nprobes, refine = min(speed, key=speed.get) if speed else (400, 50)
    row = measure(lancedb_fn(table, nprobes, refine), d, k, base)
    cfg = "IVF_PQ (defaults)" + (f", nprobes {nprobes}, refine {refine}" if tuned else ", default nprobes")
    return {"config": cfg, "disk_bytes": dir_bytes(work / "lance"), "tuning": tuning} | row


PEERS = ("autofaiss", "lancedb-default", "lancedb-tuned", "oracle")


def build_child(peer: str, data: Path, budget: int, work: Path, k: int, target: float) -> dict[str, Any]:
    d = load_data(data)
    base = rss_now()
    reset_peak()
    t0 = time.perf_counter()
    if peer == "autofaiss":
        out = autofaiss_build(d, budget, work)
    elif peer == "oracle":
        from benchmarks.oracle import oracle

        out = oracle(d, budget, k, target, work)
    elif peer.startswith("lancedb"):
        out = lancedb_build(d, budget, work)
    else:
        raise ValueError(peer)
    return {
        "build_s": round(time.perf_counter() - t0, 2),
        "build_rss_over_base_bytes": rss_peak() - base,
    } | out


def search_child(peer: str, data: Path, work: Path, k: int, target: float) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    d = load_data(data)
    base = rss_now()
    if peer in ("autofaiss", "oracle"):
        return faiss_file_search(d, work, k, base)
    return lancedb_search(d, work, k, base, tuned=peer == "lancedb-tuned", target=target)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    if args.stage == "build":
        return build_child(args.peer, args.data, args.budget, args.workdir, args.k, args.target)
    return search_child(args.peer, args.data, args.workdir, args.k, args.target)


def run_peer(
    peer: str,
    data: Path,
    budget: int,
    workdir: Path,
    *,
    python: str = sys.executable,
    k: int = 10,
    target: float = 0.95,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """Build (one process) then search (a fresh one) with `python`; one row, `error` set if a stage failed."""
    work = workdir / f"{peer.split('-')[0]}-{budget}"
    row: dict[str, Any] = {"system": peer, "budget_bytes": budget}
    stages = ["build", "search"]
    if peer == "lancedb-tuned" and (work / "lance").exists():  # the default's index, searched differently
        stages = ["search"]
    else:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        # the oracle needs uniretrieve (its environment, as a module); the others run this file as a script, since
        # autofaiss installs a top-level `benchmarks` package of its own
        launch = ["-m", "benchmarks.peers"] if peer == "oracle" else [__file__]
        cmd = [python, *launch, peer, "--stage", stage, "--data", str(data), "--budget", str(budget)]
        cmd += ["--workdir", str(work), "--k", str(k), "--target", str(target)]
        row |= child_row(cmd, stage, timeout_s)
        if "error" in row:
            return row
    return row


def child_row(cmd: list[str], stage: str, timeout_s: float) -> dict[str, Any]:
    """Run one benchmark child process; its last stdout line (JSON) or {"error": one line saying why not}."""
    import subprocess

    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{stage}: no result within {timeout_s:.0f} s"}
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        return {"error": f"{stage}: {tail[0][:300]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=PEERS)
    ap.add_argument("--stage", choices=["build", "search"], default=None)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budget", type=int, default=1 << 30)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/uniretrieve-peers"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--python", default=sys.executable, help="the Python that has the peer installed")
    args = ap.parse_args(argv)
    if args.stage is None:
        row = run_peer(
            args.peer, args.data, args.budget, args.workdir, python=args.python, k=args.k, target=args.target
        )
        print(json.dumps(row))
        return
    try:
        print(json.dumps(run_child(args), default=str))
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
