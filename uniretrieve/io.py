"""Atomic file writes: the one place where temp-file / fsync / rename is written out.

A reader of any file uniretrieve writes sees the old content or the new one, never a torn file, also across a
crash or a power loss: the bytes go to a temp file in the same directory (so the rename never crosses a file
system), are flushed and fsynced, the temp file is renamed over the target (`os.replace`, atomic on POSIX), and
the directory entry is fsynced so that the rename itself survives a power loss.

Temp names are unique per writer (host, pid, thread), so two writers never share one, and `is_stale_temp` tells
whether a leftover temp file's writer is gone (safe to delete).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """`.<name>.tmp-<host>-<pid>-<thread>` beside `path`: unique per writer, and tells whether its writer is alive."""
    return path.with_name(
        f".{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
    )


def is_stale_temp(p: Path) -> bool:
    """A temp file of ours whose writer (a process on this host) is gone. Temps of other hosts are left alone: their
    writer may be alive."""
    if not p.name.startswith(".") or TMP_MARK not in p.name:
        return False
    host, _, rest = p.name.rsplit(TMP_MARK, 1)[1].rpartition("-")[0].rpartition("-")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def fsync_dir(path: Path) -> None:
    """Persist a rename: fsync the directory entry (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file another library wrote (pyarrow, FAISS, safetensors) to disk before it is renamed."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a file name (pyarrow, FAISS); on a clean exit the
    temp file is fsynced (unless `fsync=False`) and renamed over `path`; on an error it is removed.

        with atomic_path(out / "index.faiss") as tmp:
            faiss.write_index(index, str(tmp))
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write a file so that readers see the old or the new content, never a torn one (also across power loss,
    unless `fsync=False`, which keeps only the no-torn-file guarantee)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int = 1) -> None:
    """`atomic_write_bytes` of a JSON document (non-JSON values such as paths written with `str`)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")
