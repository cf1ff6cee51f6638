"""Reading Hugging Face `datasets` Parquet exports row by row, and their image cells.

An HF `Image` feature is stored as `struct<bytes: binary, path: string>`; either field may be null (bytes inline,
or a path relative to the dataset). Rows are read one row group at a time so a large file never sits in memory
as Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from uniretrieve.eval.sources import Source

LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"
"""How a git-LFS pointer file begins: what a clone without `git lfs` leaves in place of the real file."""


def parquet_files(folder: Path, split: str = "test") -> list[Path]:
    """The split's Parquet files under `folder` in name order: `*/{split}-*.parquet` (hub layout `data/test-00000-
    of-00001.parquet`), else `{split}/*.parquet` (the `refs/convert/parquet` layout), else every Parquet file."""
    for pattern in (f"{split}-*.parquet", f"**/{split}-*.parquet", f"**/{split}/*.parquet", "**/*.parquet"):
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def open_parquet(path: Path) -> Any:
    """`pyarrow.parquet.ParquetFile(path)`, or a one-line error naming the file: a git-LFS pointer says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as f:
        head = f.read(len(LFS_HEADER))
    if head == LFS_HEADER:
        raise ValueError(
            f"{path} is a git-LFS pointer, not the Parquet file itself; fetch the real file with `git lfs pull` "
            "in the dataset's clone (or download it with `huggingface-cli download`)"
        )
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path} is not a readable Parquet file: {exc}") from exc


def iter_rows(files: Sequence[Path], columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(origin "file.parquet row N", {column: value}) for every row, in file order. Missing columns are named."""
    for path in files:
        pf = open_parquet(path)
        names = set(pf.schema_arrow.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(
                f"{path} has no column(s) {', '.join(missing)} (it has {', '.join(sorted(names))}); "
                "is this the right dataset file?"
            )
        row = 0
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=list(columns))
            for rec in table.to_pylist():
                yield f"{path.name} row {row}", rec
                row += 1


def first_present(names: Sequence[str], candidates: Sequence[str], where: Path) -> str:
    """The first of `candidates` among the column `names`, or an error naming the file."""
    for c in candidates:
        if c in names:
            return c
    raise ValueError(f"{where} has none of the columns {', '.join(candidates)} (it has {', '.join(names)})")


def column_names(path: Path) -> list[str]:
    return list(open_parquet(path).schema_arrow.names)


def image_source(cell: Any, *, origin: str, root: Path, text: str | None = None) -> Source:
    """An HF image cell (struct with bytes/path, raw bytes, or a path string) → a `Source`.

    Inline bytes win over the path (the hub's exports keep only the original file name in `path`); a bare path is
    taken relative to `root`.
    """
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return Source(text=text, image_bytes=bytes(data), origin=origin)
        if path:
            return Source(text=text, image_path=str(root / path), origin=origin)
    elif isinstance(cell, bytes | bytearray) and cell:
        return Source(text=text, image_bytes=bytes(cell), origin=origin)
    elif isinstance(cell, str) and cell:
        return Source(text=text, image_path=str(root / cell), origin=origin)
    raise ValueError(f"{origin}: the image cell is empty")
