"""Reading embedding shard directories written by `uniretrieve encode` (or `embed/writer.py`).

API (stable; index/search build on it):

    ss = open_shards("out/")                 # or open_shards(["out_a/", "out_b/"]) — same settings_hash required
    ss.manifest, ss.spec, ss.dim, ss.num_rows, ss.dtype, ss.shards (list[ShardRef], global row order)
    for vectors, table in ss.iter_vector_blocks(block_rows=65536, columns=("id",)):
        ...                                  # vectors: float32 [b, D] (C-contiguous); table: pa.Table of `columns`
    ss.read_rows([5, 0, 17], columns=("id", "text"))   # pa.Table, rows in the order asked
    ss.read_vectors([5, 0, 17])                        # float32 [3, D]
    vectors, table = ss.read_all(columns=("id",))      # everything, for sets that fit in memory
    ss.verify(checksums=True)                          # re-hash every shard against the manifest
    for ids, vectors in read_shards("out/"): ...       # the convenience form

Global row i = row i of the concatenation of the shards, in manifest order (= ascending file name), directories in
the order given. Blocks never cross a shard boundary and never hold more than `block_rows` rows; vectors come from
the Arrow buffers directly (no Python object per row). Missing, torn (size or footer mismatch) or incompatible shards
raise `ShardError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uniretrieve.embed.manifest import Manifest, ManifestError, manifest_path, read_manifest
from uniretrieve.embed.schema import EMBEDDING, EmbeddingSpec, arrow_to_vectors, read_schema_metadata
from uniretrieve.io import file_sha256


class ShardError(ManifestError):
    """A shard that is missing, torn, or does not match its manifest; the message names the file."""


@dataclass(frozen=True)
class ShardRef:
    """One shard file and where its rows sit in the global order."""

    path: Path
    rows: int
    start: int
    """Global index of the shard's first row."""
    sha256: str
    bytes: int


class ShardSet:
    """One or more shard directories read as one table of `num_rows` rows. Build with `open_shards`."""

    def __init__(self, roots: list[Path], manifests: list[Manifest], shards: list[ShardRef]) -> None:
        self.roots = roots
        self.manifests = manifests
        self.manifest = manifests[0]
        self.spec: EmbeddingSpec = self.manifest.spec()
        self.shards = shards
        self._starts = np.array([s.start for s in shards] + [sum(s.rows for s in shards)], dtype=np.int64)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    @property
    def num_rows(self) -> int:
        return int(self._starts[-1])

    @property
    def complete(self) -> bool:
        """Whether every directory's encode finished (an unfinished one reads as the shards written so far)."""
        return all(m.complete for m in self.manifests)

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"ShardSet({[str(r) for r in self.roots]}, rows={self.num_rows}, dim={self.dim}, shards={len(self.shards)})"

    # --- streaming ---------------------------------------------------------------------------------------------
    def iter_vector_blocks(
        self, block_rows: int = 65536, columns: Sequence[str] = ()
    ) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """`(vectors float32 [b, D], table of `columns`)` blocks in global row order, b ≤ block_rows.

        Reads one Parquet row-group batch at a time, so memory is bounded by `block_rows` whatever the corpus size.
        """
        if block_rows <= 0:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        cols = [EMBEDDING, *[c for c in columns if c != EMBEDDING]]
        for shard in self.shards:
            if shard.rows == 0:
                continue
            pf = self._open(shard)
            self._check_columns(pf, shard, cols)
            for batch in pf.iter_batches(batch_size=block_rows, columns=cols, use_threads=True):
                vectors = np.ascontiguousarray(arrow_to_vectors(batch.column(0), self.dim))
                yield vectors, pa.Table.from_batches([batch]).select(list(columns))

    def read_rows(
        self, global_row_indices: Sequence[int] | np.ndarray, columns: Sequence[str] = ("id",)
    ) -> pa.Table:
        """The given global rows (any order, repeats allowed) as a table of `columns`, in the order asked.

        Reads only the row groups that hold a requested row.
        """
        idx = np.asarray(global_row_indices, dtype=np.int64).reshape(-1)
        cols = list(columns)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_rows):
            bad = int(idx[(idx < 0) | (idx >= self.num_rows)][0])
            raise IndexError(f"row {bad} is out of range for {self.num_rows} rows in {self.roots}")
        if idx.size == 0:
            schema = self.spec.arrow_schema()
            return pa.Table.from_batches([], schema=pa.schema([schema.field(c) for c in cols]))
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        pieces: list[pa.Table] = []
        order: list[np.ndarray] = []
        for s in np.unique(shard_of):
            shard = self.shards[int(s)]
            where = np.flatnonzero(shard_of == s)
            local = idx[where] - shard.start
            pieces.append(self._take_local(shard, local, cols))
            order.append(where)
        table = pa.concat_tables(pieces)
        # rows are grouped by shard; put them back in the order asked
        inverse = np.empty(idx.size, dtype=np.int64)
        inverse[np.concatenate(order)] = np.arange(idx.size)
        return table.take(pa.array(inverse))

    def read_vectors(self, global_row_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 `[n, D]` vectors of the given global rows, in the order asked."""
        table = self.read_rows(global_row_indices, columns=(EMBEDDING,))
        return np.ascontiguousarray(arrow_to_vectors(table.column(EMBEDDING), self.dim))

    def read_all(self, columns: Sequence[str] = ("id",)) -> tuple[np.ndarray, pa.Table]:
        """Every row at once: float32 vectors `[num_rows, D]` and a table of `columns` (for sets that fit in
        memory, such as the teacher and evaluation caches)."""
        blocks = list(self.iter_vector_blocks(columns=columns))
        if not blocks:
            return np.empty((0, self.dim), dtype=np.float32), self.read_rows([], columns)
        return np.concatenate([v for v, _ in blocks]), pa.concat_tables([t for _, t in blocks])

    def verify(self, checksums: bool = True) -> None:
        """Check every shard against the manifest (size, footer, rows; sha256 when `checksums`)."""
        for shard in self.shards:
            self._open(shard)
            if checksums:
                digest = file_sha256(shard.path)
                if digest != shard.sha256:
                    raise ShardError(
                        f"{shard.path}: sha256 {digest[:12]}… does not match the manifest ({shard.sha256[:12]}…); "
                        "the file was changed or damaged — re-run the encode command to rewrite it"
                    )

    # --- internals ---------------------------------------------------------------------------------------------
    def _open(self, shard: ShardRef) -> pq.ParquetFile:
        try:
            pf = pq.ParquetFile(shard.path, memory_map=True)
        except (OSError, pa.ArrowException) as exc:
            raise ShardError(
                f"cannot read shard {shard.path}: {exc}; re-run the encode command to rewrite it"
            ) from exc
        if pf.metadata.num_rows != shard.rows:
            raise ShardError(
                f"{shard.path} has {pf.metadata.num_rows} rows but its manifest says {shard.rows}; "
                "re-run the encode command to rewrite it"
            )
        return pf

    def _check_columns(self, pf: pq.ParquetFile, shard: ShardRef, cols: Sequence[str]) -> None:
        names = set(pf.schema_arrow.names)
        missing = [c for c in cols if c not in names]
        if missing:
            raise ShardError(f"{shard.path} has no column(s) {missing}; it has {sorted(names)}")

    def _take_local(self, shard: ShardRef, local: np.ndarray, cols: list[str]) -> pa.Table:
        pf = self._open(shard)
        self._check_columns(pf, shard, cols)
        md = pf.metadata
        rg_starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        rg_of = np.searchsorted(rg_starts, local, side="right") - 1
        groups = np.unique(rg_of)
        table = pf.read_row_groups([int(g) for g in groups], columns=cols, use_threads=True)
        # position of each requested row inside the concatenation of the groups read
        sizes = np.array([md.row_group(int(g)).num_rows for g in groups], dtype=np.int64)
        group_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        within = group_offset[np.searchsorted(groups, rg_of)] + (local - rg_starts[rg_of])
        return table.take(pa.array(within))


def open_shards(
    dir_or_dirs: str | Path | Sequence[str | Path], *, verify_checksums: bool = False
) -> ShardSet:
    """Open one shard directory, or several made with the same settings (same `settings_hash`).

    Validates each manifest, that every listed shard exists with the recorded size, row count and schema settings;
    `verify_checksums=True` also re-hashes every file (reads all bytes).
    """
    roots = [Path(dir_or_dirs)] if isinstance(dir_or_dirs, str | Path) else [Path(d) for d in dir_or_dirs]
    if not roots:
        raise ValueError("open_shards needs at least one directory")
    manifests: list[Manifest] = []
    shards: list[ShardRef] = []
    start = 0
    for root in roots:
        m = read_manifest(root)
        if m is None:
            raise ShardError(
                f"{manifest_path(root)} not found: {root} is not an embedding directory "
                "(make one with `uniretrieve encode`)"
            )
        if manifests and m.settings_hash() != manifests[0].settings_hash():
            from uniretrieve.embed.manifest import settings_diff

            diff = "\n  ".join(settings_diff(manifests[0].settings, m.settings))
            raise ShardError(
                f"{root} was encoded with other settings than {roots[0]} and cannot be mixed:\n  {diff}"
            )
        for info in m.shards:
            path = root / info.path
            ref = ShardRef(path=path, rows=info.rows, start=start, sha256=info.sha256, bytes=info.bytes)
            _check_shard_file(ref, m)
            shards.append(ref)
            start += info.rows
        manifests.append(m)
    ss = ShardSet(roots, manifests, shards)
    if verify_checksums:
        ss.verify(checksums=True)
    return ss


def _check_shard_file(ref: ShardRef, manifest: Manifest) -> None:
    """Cheap per-shard checks at open: the file exists, has the recorded size, and its schema carries the same
    settings as the manifest (the footer is read lazily later)."""
    if not ref.path.exists():
        raise ShardError(
            f"shard {ref.path} listed in the manifest is missing; re-run the encode command to rewrite it"
        )
    size = ref.path.stat().st_size
    if ref.bytes and size != ref.bytes:
        raise ShardError(
            f"shard {ref.path} has {size} bytes but the manifest says {ref.bytes} (torn or replaced); "
            "re-run the encode command to rewrite it"
        )
    try:
        schema = pq.read_schema(ref.path)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(
            f"cannot read shard {ref.path}: {exc}; re-run the encode command to rewrite it"
        ) from exc
    meta = read_schema_metadata(schema)
    if meta.get("settings_hash") != manifest.settings_hash():
        raise ShardError(
            f"shard {ref.path} was written with settings {meta.get('settings_hash')!r}, but its manifest says "
            f"{manifest.settings_hash()!r}; the directory mixes runs — re-encode it with --overwrite"
        )


def read_shards(
    path: str | Path | Sequence[str | Path], block_rows: int = 65536
) -> Iterator[tuple[list[str], np.ndarray]]:
    """`(ids, vectors float32 [b, D])` blocks of at most `block_rows` rows, after validating manifest and schema."""
    for vectors, table in open_shards(path).iter_vector_blocks(block_rows, columns=("id",)):
        yield table.column("id").to_pylist(), vectors
