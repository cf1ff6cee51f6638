"""Search benchmark: recall@10 vs exact search, queries/s, build time and peak memory for flat, IVF, HNSW
and IVF-PQ indexes at 100k and 1M vectors, D = 1024 and 4096.

    python benchmarks/search.py                       # the full grid (heavy: up to 1M × 4096 = 16 GB float32)
    python benchmarks/search.py --quick               # smoke run: 5k × 256, every index type, in well under a minute
    python benchmarks/search.py --sizes 100000 --dims 1024 --types hnsw,ivf --out results.jsonl
    python benchmarks/search.py --sizes 1000000 --dims 4096 --types ivf --storage fp16   # half-precision vectors
    python benchmarks/search.py --device gpu          # require FAISS GPUs (default auto: GPUs when FAISS sees one)

Vectors are synthetic but embedding-like (clusters in a low-dimensional subspace plus noise, unit norm), generated
block by block from per-block seeds, so no configuration ever holds the whole float32 matrix unless the index is
flat. Each configuration runs in its own process; its peak memory is that process's max RSS minus its RSS before
building. Recall is measured on fresh queries from the same distribution against exact (blocked matmul) search.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

BLOCK = 16384


@dataclass
class SyntheticSource:
    """A VectorSource (index/source.py) whose rows are generated on demand: block b comes from seed (seed, b)."""

    num_rows: int
    dim: int
    seed: int = 0
    rank: int = 64
    clusters: int = 1000
    spec_settings: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.centres = rng.standard_normal((self.clusters, self.rank)).astype(np.float32)
        self.proj = rng.standard_normal((self.rank, self.dim)).astype(np.float32) / np.sqrt(self.rank)
        self.spec_settings = {"dim": self.dim, "model_id": "synthetic"}
        self.fingerprint = f"synthetic-{self.num_rows}-{self.dim}-{self.seed}"

    def block(self, b: int) -> np.ndarray:
        n = min(BLOCK, self.num_rows - b * BLOCK)
        return self.generate(n, (self.seed, b))

    def generate(self, n: int, seed: Any) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = self.centres[rng.integers(0, self.clusters, n)] + 0.5 * rng.standard_normal(
            (n, self.rank)
        ).astype(np.float32)
        x = z @ self.proj + 0.1 * rng.standard_normal((n, self.dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def blocks(self, block_rows: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        from uniretrieve.index.idmap import idmap_block

        for b in range(0, (self.num_rows + BLOCK - 1) // BLOCK):
            x = self.block(b)
            for s in range(0, len(x), block_rows):
                part = x[s : s + block_rows]
                first = b * BLOCK + s
                ids = pa.table({"id": [str(i) for i in range(first, first + len(part))]})
                yield part, idmap_block(ids, shard="", first_row=first)

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        for b in np.unique(rows // BLOCK):
            sel = np.flatnonzero(rows // BLOCK == b)
            out[sel] = self.block(int(b))[rows[sel] - b * BLOCK]
        return out


def reset_peak_rss() -> None:
    """Linux: reset VmHWM (peak RSS) to the current RSS, so earlier import spikes do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_one(
    index_type: str,
    n: int,
    d: int,
    nq: int,
    target: float,
    workdir: str,
    storage: str = "fp32",
    tune: str = "queries",
    gpu: bool | None = None,
) -> dict[str, Any]:
    """Build one index in this process and measure it.

    tune="queries": nprobe/efSearch are tuned on 500 fresh queries drawn apart from the measured ones (what
    `index build --tune-queries` does with real queries); "database": on held-out database vectors, leave-one-out
    (the build's default when no query shards are given). gpu: None = build and search on FAISS GPUs when present
    (as `index build` and `uniretrieve search` do), False = CPU, True = require a GPU."""
    import faiss

    from uniretrieve.index.build import build_index
    from uniretrieve.index.exact import exact_search, recall_at_k
    from uniretrieve.index.gpu import cuda_device_count
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ArraySource
    from uniretrieve.search.searcher import Searcher

    cuda_device_count()  # imports torch now, so its ~0.5 GB of libraries do not count as build memory
    src = SyntheticSource(n, d)
    queries = src.generate(nq, (src.seed, 10**9))  # a block number no corpus reaches
    tune_src = ArraySource(src.generate(500, (src.seed, 10**9 + 1))) if tune == "queries" else None
    reset_peak_rss()
    base = rss_bytes()
    t0 = time.perf_counter()
    meta = build_index(
        src,
        f"{workdir}/{index_type}-{n}-{d}",
        BuildConfig(
            index_type=index_type, storage=storage, target_recall=target, memory_budget=1 << 40, gpu=gpu
        ),
        tune_source=tune_src,
        overwrite=True,
        log=lambda s: None,
    )
    build_s = time.perf_counter() - t0
    peak = peak_rss_bytes() - base
    gt_s, gt_i = exact_search((v for v, _ in src.blocks(BLOCK)), queries, 20)
    searcher = Searcher.load(f"{workdir}/{index_type}-{n}-{d}", gpu=gpu)
    searcher.search(vectors=queries[:10], k=10)  # warm-up
    t0 = time.perf_counter()
    hits = searcher.search(vectors=queries, k=10)
    batch_s = time.perf_counter() - t0
    found = np.array([[h.internal_id for h in r] + [-1] * (10 - len(r)) for r in hits])
    t0 = time.perf_counter()
    for q in queries[:50]:
        searcher.search_vectors(q[None, :], k=10)
    single_ms = (time.perf_counter() - t0) / min(50, nq) * 1000
    return {
        "type": index_type,
        "factory": meta.factory,
        "n": n,
        "dim": d,
        "storage": storage,
        "built_on": meta.built_on,
        "searched_on": "gpu" if searcher.on_gpu else "cpu",
        "queries": nq,
        "tuned_on": tune,
        "recall@10": round(recall_at_k(found, gt_i, gt_s, 10), 4),
        "tuned": meta.search_params,
        "tuned_recall@10": meta.tuning.get("recall"),
        "qps_batch": round(nq / batch_s, 1),
        "latency_ms_single": round(single_ms, 3),
        "build_s": round(build_s, 2),
        "build_phases_s": meta.build_seconds,
        "peak_mem_bytes": int(peak),
        "expected_index_bytes": meta.choice.get("expected_bytes"),
        "threads": faiss.omp_get_max_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 5000 × 256, 100 queries")
    ap.add_argument("--types", default="flat,ivf,hnsw,ivfpq")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dims", default="1024,4096")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument(
        "--storage", default="fp32", choices=["fp32", "fp16"], help="full vectors as float32 or float16"
    )
    ap.add_argument(
        "--tune",
        default="queries",
        choices=["queries", "database"],
        help="tune on fresh queries (default) or leave-one-out database vectors",
    )
    ap.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "gpu"],
        help="FAISS GPUs when present (auto), never (cpu), or required (gpu)",
    )
    ap.add_argument("--workdir", default="/tmp/uniretrieve-bench-search")
    ap.add_argument("--out", default=None, help="append JSON lines here too")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "type,n,d" in a child process
    args = ap.parse_args(argv)
    if args.one:
        t, n, d = args.one.split(",")
        gpu = {"auto": None, "cpu": False, "gpu": True}[args.device]
        print(
            json.dumps(
                run_one(
                    t,
                    int(n),
                    int(d),
                    args.queries,
                    args.target_recall,
                    args.workdir,
                    args.storage,
                    args.tune,
                    gpu,
                )
            )
        )
        return
    sizes = [5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    dims = [256] if args.quick else [int(s) for s in args.dims.split(",")]
    nq = 100 if args.quick else args.queries
    rows = []
    for n in sizes:
        for d in dims:
            for t in args.types.split(","):
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{t},{n},{d}",
                    "--queries",
                    str(nq),
                    "--target-recall",
                    str(args.target_recall),
                    "--workdir",
                    args.workdir,
                    "--storage",
                    args.storage,
                    "--tune",
                    args.tune,
                    "--device",
                    args.device,
                ]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    row = {"type": t, "n": n, "dim": d, "error": res.stderr.strip().splitlines()[-1:]}
                else:
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print("\n| type | n | dim | recall@10 | QPS (batch) | ms/query (single) | build s | peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['type']} | {r['n']} | {r['dim']} | error: {r['error']} | | | | |")
            continue
        where = ", GPU" if r.get("searched_on") == "gpu" else ""
        print(
            f"| {r['type']} ({r['factory']}{where}) | {r['n']} | {r['dim']} | {r['recall@10']} | {r['qps_batch']} | "
            f"{r['latency_ms_single']} | {r['build_s']} | {r['peak_mem_bytes'] / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
