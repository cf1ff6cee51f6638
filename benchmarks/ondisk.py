"""An on-disk IVF index larger than the search process's anonymous memory, against the same index in RAM.

    python -m benchmarks.ondisk                                  # 2M × 256 clustered vectors (≈ 2 GB of lists)
    python -m benchmarks.ondisk --rows 200000 --json out.json    # quick
    python -m benchmarks.ondisk --limit-mib 768                  # also under a 768 MiB cgroup memory limit

Steps: clustered float16 shards (benchmarks' synthetic generator, low intrinsic dimension like real embeddings) →
`index build --on-disk` (trained on a sample, filled by `--workers` processes) → in fresh processes: (a) the on-disk
index opened by `Searcher`, memory-mapped; (b) the same trained index with every vector added in RAM. Each reports
recall@10 on fresh queries (new points from the same clusters, never database rows) against exact search, queries/s
in a batch and one at a time, and memory: peak anonymous RSS (RssAnon, sampled every 50 ms: the process's own heap,
which a cgroup limit would bound) and the mapped list pages resident at the end (RssFile: page cache, which the
kernel drops under pressure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

app = typer.Typer(add_completion=False)


def clustered(
    n: int, d: int, seed: int, clusters: int = 2000, rank: int = 48, spread: float = 1.0
) -> np.ndarray:
    """Points around `clusters` centres in a `rank`-dim subspace plus noise, L2-normalised (same centres for every
    seed, so queries of another seed are fresh points of the same distribution)."""
    base = np.random.default_rng(1234)
    centres = base.standard_normal((clusters, rank)).astype(np.float32)
    proj = base.standard_normal((rank, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    # clusters as wide as their spacing and noise in every dim: neighbours cross IVF list borders, as real
    # embeddings' do (narrow clusters let nprobe 1 reach recall 0.97, which says nothing)
    z = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, rank)).astype(np.float32)
    x = z @ proj + 2.0 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_shards(root: Path, n: int, d: int, block: int = 250_000) -> None:
    from uniretrieve.embed.commit import append_shards
    from uniretrieve.embed.schema import EmbeddingSpec

    if (root / "manifest.json").exists():
        return
    spec = EmbeddingSpec(
        dim=d, dtype="float16", model_id="synthetic", weight_hash="-", family="-", prompt_regime="-"
    )
    blocks = (
        {
            "id": [str(i) for i in range(s, min(s + block, n))],
            "embedding": clustered(min(block, n - s), d, seed=s + 1),
        }
        for s in range(0, n, block)
    )
    append_shards(root, spec, blocks, chunks=-(-n // block))


class AnonPeak:
    """Peak RssAnon of this process, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kb("RssAnon"))
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return max(self.peak, status_kb("RssAnon"))


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(
    mode: str, index_dir: Path, shards: Path, queries: Path, truth: Path, threads: int
) -> dict[str, Any]:
    """One mode in this (fresh) process: open or build the index, then recall and QPS."""
    import faiss

    from uniretrieve.index.ondisk import read_version_index
    from uniretrieve.index.source import ShardSource
    from uniretrieve.index.store import version_dir

    faiss.omp_set_num_threads(threads)
    peak = AnonPeak()
    t0 = time.perf_counter()
    meta = json.loads((version_dir(index_dir) / "index.json").read_text())
    nprobe = int(meta["search_params"]["nprobe"])
    if mode == "on-disk":
        index = read_version_index(version_dir(index_dir))
    else:  # the same trained index, every vector added in RAM
        index = faiss.read_index(str(version_dir(index_dir) / "index.faiss"))
        for vectors, _ in ShardSource(shards).blocks(65536):
            index.add(vectors)
    faiss.extract_index_ivf(index).nprobe = nprobe
    open_s = time.perf_counter() - t0
    q = np.load(queries)
    gt = np.load(truth)
    index.search(q[:50], 10)  # warm-up (page cache for the on-disk lists)
    t0 = time.perf_counter()
    _, ids = index.search(q, 10)
    batch_s = time.perf_counter() - t0
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, gt, strict=True)]))
    single = q[:200]
    t0 = time.perf_counter()
    for row in single:
        index.search(row[None], 10)
    single_s = (time.perf_counter() - t0) / len(single)
    return {
        "mode": mode,
        "nprobe": nprobe,
        "open_s": round(open_s, 2),
        "recall_at_10": round(recall, 4),
        "batch_qps": round(len(q) / batch_s, 1),
        "single_ms": round(single_s * 1e3, 3),
        "peak_anon_mib": round(peak.stop() / 1024, 1),
        "file_resident_mib": round(status_kb("RssFile") / 1024, 1),
        "ntotal": int(index.ntotal),
    }


def _header() -> dict[str, str]:
    from benchmarks.timing import run_header  # imports torch: never in the measured children

    return run_header("benchmarks.ondisk")


def evict(index_dir: Path) -> None:
    """Drop the list files' pages from the page cache (clean, unmapped pages: POSIX_FADV_DONTNEED)."""
    for path in index_dir.glob("v-*/lists-*.ivfdata"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def memory_cgroup(limit_mib: int) -> Path:
    """A cgroup-v1 memory group below this process's, limited to `limit_mib` (page cache counts against it and is
    reclaimed first; anonymous memory over it is OOM-killed)."""
    line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if ":memory:" in x)
    group = (
        Path("/sys/fs/cgroup/memory")
        / line.split(":", 2)[2].lstrip("/")
        / f"uniretrieve-ondisk-{os.getpid()}"
    )
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(limit_mib << 20))
    return group


@app.command()
def main(
    rows: Annotated[int, typer.Option(help="Database vectors.")] = 2_000_000,
    dim: Annotated[int, typer.Option(help="Vector dim.")] = 256,
    nlist: Annotated[int, typer.Option(help="IVF lists.")] = 2048,
    queries: Annotated[int, typer.Option(help="Fresh queries.")] = 1000,
    workers: Annotated[int, typer.Option(help="Processes filling the lists.")] = 2,
    threads: Annotated[int, typer.Option(help="FAISS threads while searching.")] = 2,
    work: Annotated[Path | None, typer.Option(help="Work folder (kept; default: a temp folder).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    limit_mib: Annotated[
        int | None, typer.Option(help="Also run both modes under this cgroup memory limit (MiB; cgroup v1).")
    ] = None,
    child: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    root = work or Path(tempfile.mkdtemp(prefix="ondisk-"))
    shards, index_dir = root / "shards", root / "index"
    qf, tf = root / "queries.npy", root / "truth.npy"
    if child:
        print(json.dumps(measure(child, index_dir, shards, qf, tf, threads)))
        return
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_shards(shards, rows, dim)
    gen_s = time.perf_counter() - t0
    build: dict[str, Any] = {}
    if not (index_dir / "CURRENT").exists():
        from uniretrieve.index.build import build_index
        from uniretrieve.index.meta import BuildConfig
        from uniretrieve.index.source import ShardSource

        peak = AnonPeak()
        t0 = time.perf_counter()
        cfg = BuildConfig(on_disk=True, nlist=nlist, workers=workers, train_rows=min(rows, 50 * nlist))
        build_index(ShardSource(shards), index_dir, cfg, log=print)
        build = {
            "build_s": round(time.perf_counter() - t0, 1),
            "build_peak_anon_mib": round(peak.stop() / 1024, 1),
        }
    if not tf.exists():
        from uniretrieve.index.source import ShardSource

        q = clustered(queries, dim, seed=10**9)
        from uniretrieve.index.exact import exact_search

        # exact top-10 over the shards, block by block (the project's one exact search)
        _, best_i = exact_search((v for v, _ in ShardSource(shards).blocks(131072)), q, 10)
        np.save(qf, q)
        np.save(tf, best_i)
    lists = sum(p.stat().st_size for p in index_dir.glob("v-*/lists-*.ivfdata"))
    modes = []
    runs: list[tuple[str, int | None]] = [("on-disk", None), ("in-RAM", None)]
    if limit_mib:
        runs += [("on-disk", limit_mib), ("in-RAM", limit_mib)]
    for mode, limit in runs:
        cmd = [sys.executable, "-m", "benchmarks.ondisk", "--work", str(root), "--threads", str(threads)]
        group = memory_cgroup(limit) if limit else None
        if group is not None:
            evict(index_dir)  # else the pages cached by earlier runs are charged elsewhere and never re-read
        p = subprocess.run(
            [*cmd, "--child", mode],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=(lambda g=group: (g / "cgroup.procs").write_text(str(os.getpid()))) if group else None,
        )
        if p.returncode == 0:
            row = json.loads(p.stdout.strip().splitlines()[-1])
        else:  # the kernel's OOM killer under the limit: the index did not fit
            row = {"mode": mode, "failed": f"exit {p.returncode}", "stderr": p.stderr[-300:]}
        modes.append({**row, "memory_limit_mib": limit})
        if group is not None:
            group.rmdir()
    report = {
        **_header(),
        "rows": rows,
        "dim": dim,
        "nlist": nlist,
        "generate_s": round(gen_s, 1),
        "list_file_mib": round(lists / 2**20, 1),
        **build,
        "modes": modes,
    }
    print(json.dumps(report, indent=2))
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    app()
