"""Atomic, idempotent file writes for the generator: a file is either absent, complete, or left untouched.

Every file goes through `uniretrieve.io.atomic_write_bytes` (temp file in its own folder, rename), so no reader ever
sees a torn file. Data files (json, csv, Parquet) are also fsynced before the rename. The ~30k small images of a full
corpus skip the per-file fsync (it cost over half the run time on a busy disk); instead `generate` calls `sync_all()`
before it writes `config.json`, the completion marker. A crash before the marker leaves a folder without
`config.json`, and the next run compares every file byte by byte and rewrites whatever did not reach the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from uniretrieve.io import atomic_write_bytes


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> bool:
    """Write `data` to `path` atomically (fsynced unless told not to).

    A file that already holds exactly `data` is left alone, so re-running the generator is cheap and never changes
    a file's timestamp. Returns whether the file was (re)written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data, fsync=fsync)
    return True


def write_image(path: Path, data: bytes) -> bool:
    """An image file: atomic rename, durability deferred to `sync_all` (see the module docstring)."""
    return write_bytes(path, data, fsync=False)


def write_text(path: Path, text: str) -> bool:
    return write_bytes(path, text.encode("utf-8"))


def sync_all() -> None:
    """Flush every written file to disk (before the completion marker is written)."""
    os.sync()
