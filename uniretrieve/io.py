"""Atomic file writes: the one place where temp-file / fsync / rename is written out.

A reader of any file uniretrieve writes sees the old content or the new one, never a torn file, also across a
crash or a power loss: the bytes go to a temp file in the same directory (so the rename never crosses a file
system), are flushed and fsynced, the temp file is renamed over the target (`os.replace`, atomic on POSIX), and
the directory entry is fsynced so that the rename itself survives a power loss.

Temp names are unique per writer (host, pid, thread), so two writers never share one, and `is_stale_temp` tells
whether a leftover temp file's writer is gone (safe to delete). A directory (a checkpoint, an exported model, a cache
entry) is swapped in whole by `atomic_dir`. Writers of one output are serialised by `file_lock` (flock: the kernel
drops it when its holder dies, so a crashed writer never leaves it stuck). `file_sha256` is the one file digest
(shard checksums, image hashes).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
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


def job_temp_path(path: Path) -> Path:
    """`.<name>.tmp` beside `path`: the temp name of an output one job writes. Every process of the job derives the
    same name (ranks write into one temp directory), and a crashed save's leftover, from any host, is replaced by
    the next save."""
    return path.with_name(f".{path.name}.tmp")


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


def commit_temp(tmp: Path, path: Path, *, fsync: bool = True) -> None:
    """Move a finished temp file over `path`: fsync it (unless `fsync=False`), rename, fsync the directory. For
    writers whose temp file outlives one block of code (`atomic_path` is the context-manager form)."""
    if fsync:
        fsync_file(tmp)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


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
        commit_temp(tmp, path, fsync=fsync)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, per_writer: bool = False) -> Iterator[Path]:
    """Yield a fresh, empty temp directory beside `path`; on a clean exit its files are fsynced and it replaces
    `path`, on an error it is removed.

    An existing `path` is moved aside first and deleted once the new one is in place (a directory cannot be renamed
    over a non-empty one), so only a crash between those two renames leaves `path` absent, with the old version
    kept under `.<name>.old…`. The temp directory is `job_temp_path(path)`, the same in every rank of a job (a
    crashed save's leftover is cleared), or with `per_writer=True` (outputs two processes may write at once, such as
    a shared cache entry) `temp_path(path)`, clearing leftovers of dead writers on this host.

        with atomic_dir(out / "adapter") as tmp:
            model.save_pretrained(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (_dir_temp(path, per_writer), _dir_temp(path.with_name(path.name + ".old"), per_writer))
    _remove_tree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file() and not p.is_symlink():
                fsync_file(p)
        _remove_tree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)  # the new version failed to move in: put the old one back
        _remove_tree(tmp)
        raise
    fsync_dir(path.parent)
    _remove_tree(old)


def _dir_temp(path: Path, per_writer: bool) -> Path:
    """The temp name for `path`, after clearing earlier leftovers of that name that no live writer owns."""
    if not per_writer:
        return job_temp_path(path)
    for p in path.parent.glob(f".{glob.escape(path.name)}{TMP_MARK}*"):
        if is_stale_temp(p):
            _remove_tree(p)
    return temp_path(path)


def _remove_tree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


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


def file_sha256(path: str | Path, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file's bytes, read in `chunk`-sized blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def acquire_lock(
    path: str | Path, *, shared: bool = False, blocking: bool = True, create: bool = True
) -> int:
    """An flock on `path` (created when `create`; else opened read-only, which works on read-only mounts): shared
    or exclusive; `blocking=False` raises BlockingIOError while another holder conflicts. Returns the file
    descriptor; closing it releases the lock, and so does the holder's death (no stale lock files to clear)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644) if create else os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def file_lock(path: str | Path, *, shared: bool = False, blocking: bool = True) -> Iterator[int]:
    """`acquire_lock` for the duration of a block (flock works across hosts on local disks, NFSv4, and Lustre
    mounted with `flock`)."""
    fd = acquire_lock(path, shared=shared, blocking=blocking)
    try:
        yield fd
    finally:
        os.close(fd)


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the temp files in `root` left by killed writers on this host (never read: their write is redone).
    Temps of live processes — other ranks writing right now — are kept."""
    removed = []
    for p in sorted(root.iterdir()):
        if is_stale_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
