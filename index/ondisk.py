"""On-disk IVF indexes: inverted lists in files that readers memory-map, for indexes larger than RAM.

A version folder (index/store.py) of an on-disk index holds, beside idmap.parquet and index.json:

    index.faiss            the trained, empty IVF index (coarse quantizer and codec: small)
    lists.json             {"format": "uniretrieve-ivf-lists", "parts": ["lists-000001", "lists-000002"]}
    lists-000001.faiss     a part's IVF header with its OnDiskInvertedLists table (list offsets and sizes: small)
    lists-000001.ivfdata   that part's inverted lists (codes and internal ids): the bulk, memory-mapped

A build trains once on a sample, fills the lists range by range (in parallel: local processes or Ray tasks, each an
in-RAM IVF of one range written to a temporary file) and merges the ranges into one part with FAISS's
`OnDiskInvertedLists.merge_from_multiple`, which reads them memory-mapped, so no step holds more than one range in
RAM. `index add` writes one new part holding only the new vectors and hard-links the older parts into the new
version folder (no copy; a hard link keeps the data while any version names it), then the pointer switches as for
any version. A reader stacks the parts with FAISS's `HStackInvertedLists` (list i = list i of every part, ids kept),
so a search scans the same lists as one merged part would. After `MAX_PARTS` parts an add merges them all into one
(a copy of the lists, said in its log). Design and sources: docs/scaling.md#on-disk-indexes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.meta import INDEX_NAME, IndexMetaError
from uniretrieve.io import atomic_path, atomic_write_json

LISTS_NAME = "lists.json"
LISTS_FORMAT = "uniretrieve-ivf-lists"
MAX_PARTS = 16
"""Parts a version may stack before an add merges them (each part costs a list lookup per probed list)."""
RANGE_ROWS = 262_144
"""Rows one fill task holds in RAM at most (its vectors and its in-RAM lists: 2 × rows × code size)."""


def is_on_disk(folder: Path) -> bool:
    return (Path(folder) / LISTS_NAME).exists()


def part_names(folder: Path) -> list[str]:
    path = Path(folder) / LISTS_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        parts = [str(p) for p in d["parts"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexMetaError(f"cannot read {path} ({exc}); rebuild the index") from None
    if d.get("format") != LISTS_FORMAT or not parts:
        raise IndexMetaError(f"{path} is not an on-disk list table of this index; rebuild the index")
    return parts


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """FAISS's on-disk lists print progress lines ("resizing ...") to C stdout; they would end up in the output
    of `uniretrieve search --json`. Point fd 1 at /dev/null meanwhile (C buffers flushed before and after)."""
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def read_version_index(folder: Path) -> Any:
    """The FAISS index of a version folder: index.faiss itself, or an on-disk index's parts stacked over its
    trained index, memory-mapped read-only (pages come from the page cache, not the process's heap)."""
    import faiss

    folder = Path(folder)
    if not is_on_disk(folder):
        return faiss.read_index(str(folder / INDEX_NAME))
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    with quiet_stdout():
        parts = [faiss.read_index(str(folder / f"{name}.faiss"), flags) for name in part_names(folder)]
    for p in parts:
        faiss.downcast_InvertedLists(faiss.extract_index_ivf(p).invlists).prefetch_nthread = PREFETCH_THREADS
    if len(parts) == 1:
        return parts[0]
    index = faiss.read_index(str(folder / INDEX_NAME))
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.InvertedListsPtrVector()
    for p in parts:
        lists.push_back(faiss.extract_index_ivf(p).invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    ivf.replace_invlists(stacked, True)
    stacked.this.disown()  # owned by the index now; the parts own their lists and stay referenced below
    index.ntotal = ivf.ntotal = sum(int(p.ntotal) for p in parts)
    faiss.add_to_referenced_objects(
        index, parts
    )  # the parts (and their mapped lists) live as long as the index
    return index


PREFETCH_THREADS = 0
"""Threads FAISS's on-disk lists start per search to read probed lists ahead (its default: 32). 0, measured here:
on cached pages they only cost (200k × 256, nprobe 77: 700 → 1,158 queries/s, one query 3.3 → 1.2 ms, as fast as
the lists in RAM), and with the lists 1.5× over a cgroup memory limit 32 threads thrashed (1,000 queries unfinished
after 10 minutes; 0 threads: 2.9 queries/s, bound by the disk's random reads)."""


# --- filling lists -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FillTask:
    """Rows [start, stop) of `source` into a copy of the trained index at `trained`, written to `out`."""

    trained: str
    start: int
    stop: int
    out: str
    block_rows: int
    first_id: int = 0
    """Internal id of row `start`."""


def fill_range(task: FillTask, source: Any) -> int:
    """Run one FillTask (in a worker process, a Ray task or here): the range's vectors into an in-RAM IVF, saved."""
    import faiss

    index = faiss.read_index(task.trained)
    for s in range(task.start, task.stop, task.block_rows):
        e = min(s + task.block_rows, task.stop)
        vectors = np.ascontiguousarray(source.take(np.arange(s, e, dtype=np.int64)), dtype=np.float32)
        index.add_with_ids(vectors, np.arange(s, e, dtype=np.int64) - task.start + task.first_id)
    with atomic_path(Path(task.out)) as tmp:
        faiss.write_index(index, str(tmp))
    return int(index.ntotal)


def fill_ranges(
    tasks: Sequence[FillTask], source: Any, *, workers: int, engine: str, ray_address: str | None
) -> None:
    """Run the fill tasks: in this process (workers 0), in `workers` local processes, or as Ray tasks."""
    if engine == "ray":
        from uniretrieve.embed.ray_engine import connect

        ray = connect(ray_address)
        remote = ray.remote(num_cpus=1, max_retries=3)(fill_range)
        ref = ray.put(source)
        ray.get([remote.remote(t, ref) for t in tasks])
        return
    if workers <= 0 or len(tasks) == 1:
        for t in tasks:
            fill_range(t, source)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        for _ in pool.map(fill_range, tasks, [source] * len(tasks)):
            pass


def plan_ranges(start: int, stop: int, workers: int) -> list[tuple[int, int]]:
    """[start, stop) cut into ranges of at most RANGE_ROWS rows, at least one per worker."""
    n = stop - start
    if n <= 0:
        return []
    size = min(RANGE_ROWS, max(1, -(-n // max(workers, 1))))
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def write_part(trained: Path, range_files: Sequence[Path], folder: Path, name: str) -> int:
    """Merge in-RAM IVF files (read memory-mapped) into the on-disk part `name` of `folder`; returns its vectors.
    The range files are removed after."""
    import faiss

    with quiet_stdout():
        sources = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in range_files]
        n = _merge_lists(trained, sources, folder, name)
    del sources
    for f in range_files:
        Path(f).unlink(missing_ok=True)
    return n


def _merge_lists(trained: Path, sources: Sequence[Any], folder: Path, name: str) -> int:
    """The lists of `sources` (IVF indexes on `trained`'s quantizer) merged into part `name` of `folder`: its
    `.ivfdata` (fsynced) and `.faiss` header."""
    import faiss

    index = faiss.read_index(str(trained))
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(folder / f"{name}.ivfdata"))
    vec = faiss.InvertedListsPtrVector()
    for s in sources:
        vec.push_back(faiss.extract_index_ivf(s).invlists)
    n = int(lists.merge_from_multiple(vec.data(), vec.size(), False)) if vec.size() else 0
    ivf.replace_invlists(lists, True)
    lists.this.disown()
    index.ntotal = ivf.ntotal = n
    _fsync(folder / f"{name}.ivfdata")
    with atomic_path(folder / f"{name}.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    return n


def _fsync(path: Path) -> None:
    if not path.exists():  # an empty part maps no file
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_lists_table(folder: Path, parts: Sequence[str]) -> None:
    atomic_write_json(folder / LISTS_NAME, {"format": LISTS_FORMAT, "parts": list(parts)})


def part_name(number: int) -> str:
    return f"lists-{number:06d}"


def _part_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def link_parts(base: Path, out: Path, names: Sequence[str]) -> None:
    """The older version's parts (and its trained index) into the new folder as hard links: no data copied."""
    for name in [INDEX_NAME, *(f"{n}.{ext}" for n in names for ext in ("faiss", "ivfdata"))]:
        src = base / name
        if not src.exists():  # an empty part has no .ivfdata
            continue
        try:
            os.link(src, out / name)
        except OSError:  # a file system without hard links: copy (the one case an add copies the lists)
            shutil.copy2(src, out / name)


@dataclass
class FillPlan:
    """How lists are filled: by `workers` local processes or Ray tasks."""

    workers: int = 0
    engine: str = "local"
    ray_address: str | None = None
    block_rows: int = 16384


def fill_part(
    trained: Path,
    source: Any,
    folder: Path,
    name: str,
    *,
    start: int,
    stop: int,
    first_id: int,
    plan: FillPlan,
    log: Callable[[str], None],
) -> int:
    """Rows [start, stop) of `source` as on-disk part `name` of `folder` (internal ids from `first_id`)."""
    t0 = time.perf_counter()
    ranges = plan_ranges(start, stop, plan.workers)
    tasks = [
        FillTask(
            str(trained),
            a,
            b,
            str(folder / f".{name}.range-{i:05d}.faiss"),
            plan.block_rows,
            first_id + a - start,
        )
        for i, (a, b) in enumerate(ranges)
    ]
    how = (
        "Ray tasks"
        if plan.engine == "ray"
        else f"{plan.workers} processes"
        if plan.workers > 0
        else "this process"
    )
    log(f"filling {stop - start} vectors into {name} in {len(tasks)} range(s) ({how})")
    try:
        fill_ranges(tasks, source, workers=plan.workers, engine=plan.engine, ray_address=plan.ray_address)
        n = write_part(trained, [Path(t.out) for t in tasks], folder, name)
    finally:
        for t in tasks:
            Path(t.out).unlink(missing_ok=True)
    log(f"wrote {name}.ivfdata: {n} vectors in {time.perf_counter() - t0:.1f} s")
    return n


def merge_parts(base: Path, names: Sequence[str], out: Path, name: str) -> int:
    """Every part of `base` into one new part of `out` (a copy of the lists, read memory-mapped)."""
    import faiss

    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    with quiet_stdout():
        parts = [faiss.read_index(str(base / f"{n}.faiss"), flags) for n in names]
        return _merge_lists(base / INDEX_NAME, parts, out, name)


def next_part(names: Sequence[str]) -> str:
    return part_name(max((_part_number(n) for n in names), default=0) + 1)


def lists_bytes(folder: Path) -> int:
    """Bytes of a version's list files (its on-disk size)."""
    return sum(p.stat().st_size for p in Path(folder).glob("lists-*.ivfdata"))


__all__ = [
    "LISTS_NAME",
    "FillPlan",
    "fill_part",
    "is_on_disk",
    "link_parts",
    "merge_parts",
    "next_part",
    "part_names",
    "read_version_index",
    "write_lists_table",
]
