"""Writing shards: one atomic Parquet file per finished chunk, on a background thread so the model never waits on I/O.

Crash safety (clip-retrieval writes `.npy` files in place and cannot resume,
docs/design-notes.md#embedding-shards): a shard is written to a temp file in the same directory, flushed and
fsynced, renamed to `part-NNNNNN.parquet`, and only then recorded in `errors.jsonl` and `manifest.json` (each also
written atomically). A kill at any moment leaves either no shard or a complete shard; a complete shard not yet in
the manifest is simply rewritten on resume.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uniretrieve.embed.schema import EmbeddingSpec, build_table, row_group_rows
from uniretrieve.io import atomic_path, atomic_write_bytes, file_sha256

SHARD_PREFIX = "part-"
ERRORS_NAME = "errors.jsonl"


SHARD_RE = re.compile(r"part-(\d{6,})(?:-r(\d+))?\.parquet")


def shard_name(number: int, revision: int = 0) -> str:
    """`part-000042.parquet`: six digits keep lexicographic = numeric order up to a million shards. A shard that
    segment `revision` rewrote (older rows superseded) is `part-000042-r<revision>.parquet`: a new name, so the
    file the manifest names stays intact until the manifest switches to the rewrite."""
    suffix = f"-r{revision}" if revision else ""
    return f"{SHARD_PREFIX}{number:06d}{suffix}.parquet"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """(number, revision) of a shard file name of ours, None for any other name."""
    m = SHARD_RE.fullmatch(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def write_shard_file(path: Path, table: pa.Table, rows_per_group: int) -> tuple[str, int]:
    """Write `table` to `path` atomically (temp in the same directory, fsync, rename); returns (sha256, bytes)."""
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=rows_per_group,
            compression="zstd",
            use_dictionary=[c for c in table.column_names if c not in ("embedding", "id")],
            write_statistics=["id"],
        )
        digest, size = file_sha256(tmp), tmp.stat().st_size
    return digest, size


# --- errors.jsonl ----------------------------------------------------------------------------------------------
def read_errors(root: Path) -> list[dict[str, Any]]:
    path = root / ERRORS_NAME
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path} line {n + 1} is not JSON ({exc}); delete the line or the file"
                ) from exc
    return out


def write_errors(root: Path, entries: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    atomic_write_bytes(root / ERRORS_NAME, data.encode("utf-8"))


def replace_chunk_errors(root: Path, segment: int, chunk: int, entries: list[dict[str, Any]]) -> None:
    """Put a chunk's error lines in `errors.jsonl`, replacing lines a killed earlier attempt left for it (call under
    the directory lock). Rewriting keeps the file free of duplicates whatever moment a run was killed at."""
    old = read_errors(root)
    kept = [e for e in old if (e.get("segment"), e.get("chunk")) != (segment, chunk)]
    if entries or len(kept) != len(old):
        write_errors(root, kept + entries)


# --- chunk buffers and the background writer -------------------------------------------------------------------
@dataclass
class ChunkResult:
    """Everything one chunk produced: rows (in any order; sorted by input position on write), errors, counts."""

    segment: int
    chunk: int
    shard_number: int
    input_start: int
    input_end: int
    positions: list[int] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    vectors: list[np.ndarray] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    truncated: int = 0

    def add_rows(self, positions: list[int], columns: dict[str, list[Any]], vectors: np.ndarray) -> None:
        self.positions.extend(positions)
        for k, v in columns.items():
            self.columns.setdefault(k, []).extend(v)
        self.vectors.append(np.asarray(vectors, dtype=np.float32))

    @property
    def rows(self) -> int:
        return len(self.positions)

    def table(self, spec: EmbeddingSpec) -> pa.Table:
        order = np.argsort(np.asarray(self.positions, dtype=np.int64), kind="stable")
        vectors = np.concatenate(self.vectors)[order] if self.vectors else np.empty((0, spec.dim), np.float32)
        cols: dict[str, Any] = {k: [v[i] for i in order] for k, v in self.columns.items()}
        cols["embedding"] = vectors
        return build_table(spec, cols)


class ShardWriter:
    """Writes finished chunks on a background thread, then calls `commit(result, name, sha256, size)`.

    `commit` records the shard (errors.jsonl, then manifest) and runs on the writer thread, in submission order.
    An exception on the thread is re-raised in the caller at the next `submit` or at `close`.
    """

    def __init__(
        self, root: Path, spec: EmbeddingSpec, commit: Callable[..., None], max_pending: int = 2
    ) -> None:
        self.root = root
        self.spec = spec
        self.commit = commit
        self.rows_per_group = row_group_rows(spec.dim, spec.dtype)
        self._queue: queue.Queue[ChunkResult | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="uniretrieve-shard-writer", daemon=True)
        self._thread.start()

    def submit(self, result: ChunkResult) -> None:
        self._raise_if_failed()
        self._queue.put(result)  # blocks when `max_pending` chunks wait: bounded memory

    def close(self) -> None:
        """Finish pending chunks and stop the thread; re-raise a writer error."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing shards to {self.root} failed: {self._error}") from self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                self.write(item)
            except BaseException as exc:  # surfaced in the main thread
                self._error = exc

    def write(self, result: ChunkResult) -> None:
        """Write one chunk's shard (if it has rows) and commit it (synchronously; the thread calls this)."""
        if result.rows:
            name = shard_name(result.shard_number)
            digest, size = write_shard_file(self.root / name, result.table(self.spec), self.rows_per_group)
            self.commit(result, name, digest, size)
        else:
            self.commit(result, None, "", 0)
