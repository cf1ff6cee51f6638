"""Peak memory of building a flat (or HNSW) index, with the vector store sized once (what `index build` does) and with
FAISS regrowing it per added block (what FAISS does by itself). Each regrowth briefly holds the old and the new copy;
the worst case is a corpus just past a power-of-two size (70,000 × 4096 float32 = 1.15 GB just past 2^30 bytes).

    python benchmarks/build_memory.py                                   # 70,000 × 4096, Flat, both ways
    python benchmarks/build_memory.py --rows 100000 --dim 1024 --type hnsw

Each variant runs in its own process on the same vectors (generated before the measurement starts); the peak is that
process's max RSS growth over the build (add, tuning and writing included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np


def measure(rows: int, dim: int, index_type: str, reserve: bool, workdir: str) -> dict:
    from benchmarks.search import peak_rss_bytes, reset_peak_rss, rss_bytes
    from uniretrieve.index import build
    from uniretrieve.index.gpu import cuda_device_count
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ArraySource

    cuda_device_count()  # imports torch now, as benchmarks/search.py does: its libraries are not build memory
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = ArraySource(x)
    if not reserve:
        build.reserve_rows = lambda index, n: None  # FAISS's own growth
    reset_peak_rss()
    base = rss_bytes()
    t0 = time.perf_counter()
    meta = build.build_index(
        src,
        f"{workdir}/{index_type}-{reserve}",
        BuildConfig(index_type=index_type, memory_budget=1 << 40, tune_queries=100),
        overwrite=True,
        log=lambda s: None,
    )
    return {
        "type": index_type,
        "factory": meta.factory,
        "rows": rows,
        "dim": dim,
        "reserve": reserve,
        "index_bytes": meta.choice.get("expected_bytes"),
        "peak_growth_bytes": peak_rss_bytes() - base,
        "build_s": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=70000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--type", default="flat", choices=["flat", "hnsw"])
    ap.add_argument("--one", choices=["reserve", "regrow"], help=argparse.SUPPRESS)  # internal: child process
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    if args.rows < 1 or args.dim < 1:
        ap.error(f"--rows and --dim must be positive, got {args.rows} × {args.dim}")
    if args.one:
        print(json.dumps(measure(args.rows, args.dim, args.type, args.one == "reserve", args.workdir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("regrow", "reserve"):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.build_memory",
                "--one",
                way,
                "--rows",
                str(args.rows),
                "--dim",
                str(args.dim),
                "--type",
                args.type,
                "--workdir",
                args.workdir or tmp,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"the {way} build failed: {(res.stderr.strip().splitlines() or ['no message'])[-1]}")
            row = json.loads(res.stdout.splitlines()[-1])
            print(
                f"{way:8s} {row['factory']:12s} {row['rows']} × {row['dim']}: index {row['index_bytes'] / 2**20:.0f}"
                f" MiB, peak growth {row['peak_growth_bytes'] / 2**20:.0f} MiB, build {row['build_s']} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
