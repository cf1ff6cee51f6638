"""Where a search process's memory goes: the Searcher's steps against raw FAISS on the same index.

Each mode runs in a fresh process (`/proc/self/status` RssAnon / RssFile, MiB, over the process after its queries
are loaded): `raw` reads index.faiss with FAISS and searches; `ours` imports the Searcher, reads the index, opens
the hit store (memory-mapped), builds the Searcher, and searches through `search_arrays` (the hits' id-map rows
included).

    python -m benchmarks.searcher_memory --index IDX            # an index built by `uniretrieve index build`
    python -m benchmarks.searcher_memory --build 50000 --dim 256 --work /tmp/mem50k   # clustered vectors, HNSW
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def child(mode: str, index: Path, dim: int) -> dict[str, Any]:
    q = np.random.default_rng(1).standard_normal((2000, dim)).astype("float32")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    marks: list[tuple[str, dict[str, float]]] = [("start", _status())]
    if mode == "raw":
        import faiss

        path = next(index.glob("v-*/index.faiss"))
        marks.append(("import", _status()))
        ix = faiss.read_index(str(path))
        marks.append(("index", _status()))
        ix.search(q, 10)
        for i in range(200):
            ix.search(q[i : i + 1], 10)
    else:
        from uniretrieve.index.hitstore import HitStore
        from uniretrieve.index.meta import read_meta
        from uniretrieve.index.ondisk import read_version_index
        from uniretrieve.index.store import open_version
        from uniretrieve.search.searcher import Searcher

        marks.append(("import", _status()))
        held = open_version(index)
        meta = read_meta(held.path)
        ix = read_version_index(held.path)
        marks.append(("index", _status()))
        store = HitStore.open(held.path)
        marks.append(("hit store", _status()))
        searcher = Searcher(index, meta, ix, store=store)
        searcher.version = held
        marks.append(("searcher", _status()))
        _ = searcher.search_arrays(q, k=10).rows
        for i in range(200):
            _ = searcher.search_arrays(q[i : i + 1], k=10).rows
    marks.append(("searches", _status()))
    steps = {
        name: {k: round(now[k] - before[k], 1) for k in now}
        for (_, before), (name, now) in itertools.pairwise(marks)
    }
    return {
        "mode": mode,
        "steps": steps,
        "pandas_imported": "pandas" in sys.modules,
        "pyarrow_imported": "pyarrow" in sys.modules,
    }


def build(n: int, dim: int, work: Path) -> Path:
    from tests.index_helpers import clustered_vectors, quiet, write_shard_dir
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ShardSource

    out = work / "idx"
    if not out.is_dir():
        shards = write_shard_dir(work / "shards", clustered_vectors(n, dim))
        build_index(ShardSource([shards]), out, BuildConfig(index_type="hnsw", gpu=False), log=quiet)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, default=None)
    p.add_argument(
        "--build", type=int, default=None, help="Build an HNSW index of this many clustered vectors."
    )
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("/tmp/searcher-memory"))
    p.add_argument("--child", choices=("raw", "ours"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.index, args.dim)))
        return []
    index = args.index or build(args.build or 50_000, args.dim, args.work)
    rows = []
    for mode in ("raw", "ours"):
        cmd = [sys.executable, "-m", "benchmarks.searcher_memory", "--child", mode, "--index", str(index)]
        cmd += ["--dim", str(args.dim)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        print(json.dumps(rows[-1]))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
