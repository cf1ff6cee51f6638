"""Index versions: every build or add writes a complete new version folder, then switches one pointer to it.

    idx/
      CURRENT              {"format": "uniretrieve-index-pointer", "version": 2, "dir": "v-000002"}
      .uniretrieve.lock    the writers' lock (flock, held for a whole build or add)
      v-000002/            index.faiss  idmap.parquet  index.json  .readers
      v-000001/            an older version, kept while a reader still holds it

The pointer is replaced atomically (one rename), so a reader sees the old complete version or the new one, never a
mixture, and a kill at any step leaves one of them current. A reader (`open_version`) reads the pointer once and
holds a shared flock on that version's `.readers` while open; a writer deletes a version that is not current only
when it gets an exclusive non-blocking lock on it, i.e. when no reader holds it. An flock dies with its holder, so
neither a crashed reader nor a crashed writer leaves a lock stuck, and a killed writer's half-written folder is
never named by the pointer (the next writer removes it).

An index written before versions existed (the three files directly in idx/, no CURRENT) reads as version 0; the
next build or add writes v-000001 and removes the flat files once no reader holds them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from uniretrieve.index.meta import IDMAP_NAME, INDEX_NAME, META_NAME, IndexMetaError, read_meta
from uniretrieve.io import acquire_lock, atomic_write_json, file_lock, fsync_dir, is_stale_temp

POINTER_NAME = "CURRENT"
POINTER_FORMAT = "uniretrieve-index-pointer"
WRITER_LOCK = ".uniretrieve.lock"
READERS_LOCK = ".readers"
FLAT_FILES = (INDEX_NAME, IDMAP_NAME, META_NAME)
_VERSION = re.compile(r"v-(\d{6,})")


@dataclass(frozen=True)
class Version:
    number: int
    """0 for the flat layout of older releases."""
    path: Path
    """The folder holding index.faiss, idmap.parquet and index.json."""


def version_name(number: int) -> str:
    return f"v-{number:06d}"


def read_pointer(root: str | Path) -> Version | None:
    """The version CURRENT names; None when there is no CURRENT (the flat layout, or no index)."""
    root = Path(root)
    path = root / POINTER_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        name, number = str(d["dir"]), int(d["version"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexMetaError(f"cannot read {path} ({exc}); rebuild the index") from None
    if d.get("format") != POINTER_FORMAT or name != version_name(number):
        raise IndexMetaError(
            f"{path} does not name a version folder of this index ({name!r}); rebuild the index"
        )
    return Version(number, root / name)


def current_version(root: str | Path) -> Version:
    """The version a reader opens now: the pointer's, else version 0 (the flat layout of older releases)."""
    return read_pointer(root) or Version(0, Path(root))


def has_index(root: str | Path) -> bool:
    root = Path(root)
    return (root / POINTER_NAME).exists() or (root / META_NAME).exists()


def version_dir(root: str | Path) -> Path:
    """The folder of the current version (for reading files of a finished index; readers that must not lose it
    mid-read use `open_version`)."""
    return current_version(root).path


class OpenVersion:
    """A version held open for reading: no writer deletes it until `close()` (or this object's collection)."""

    def __init__(self, version: Version, fd: int | None) -> None:
        self.version = version
        self.path = version.path
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def open_version(root: str | Path, *, attempts: int = 1000) -> OpenVersion:
    """Hold the current version of the index in `root` for reading (a shared lock on its `.readers`).

    A writer may switch the pointer and delete the version between our reading the pointer and locking: then the
    lock file we got is no longer the one in place (or is gone), and we read the pointer again.
    """
    root = Path(root)
    for _ in range(attempts):
        v = current_version(root)
        if v.number == 0 and not (root / META_NAME).exists():
            read_meta(root)  # raises the "not an index directory" error
        lock = v.path / READERS_LOCK
        try:
            fd = acquire_lock(lock, shared=True, create=v.number == 0)
        except FileNotFoundError:
            if read_pointer(root) != v:
                continue  # removed after we read the pointer
            if not v.path.is_dir():
                raise IndexMetaError(
                    f"{root / POINTER_NAME} names {v.path.name}, which does not exist; rebuild the index"
                ) from None
            try:  # the current version lacks its lock file (copied without dot files?): make one, or read unheld
                fd = acquire_lock(lock, shared=True)
            except OSError:
                return OpenVersion(v, None)
        except OSError:  # a flat index on a read-only mount (no lock file can be made): nothing can delete it
            return OpenVersion(v, None)
        if _same_file(fd, lock) and (v.number > 0 or read_pointer(root) is None):
            return OpenVersion(v, fd)
        os.close(fd)
    raise IndexMetaError(f"{root}: the index kept changing while it was being opened; try again")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class VersionWriter:
    """What a build or add writes through, under the writers' lock: `new_folder()`, fill it, `commit(folder)`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base: Version | None = current_version(root) if has_index(root) else None
        """The current version the new one is made from (None: no index yet)."""
        self.created: list[Path] = []

    def new_folder(self) -> Path:
        taken = [self.base.number if self.base else 0, *(_number(p) for p in version_folders(self.root))]
        path = self.root / version_name(max(taken) + 1)
        path.mkdir()
        self.created.append(path)
        (path / READERS_LOCK).touch()
        return path

    def commit(self, folder: Path) -> None:
        """Make `folder` (complete, its files fsynced) the current version in one rename; then remove what no
        reader holds."""
        fsync_dir(folder)
        fsync_dir(self.root)
        atomic_write_json(
            self.root / POINTER_NAME,
            {"format": POINTER_FORMAT, "version": _number(folder), "dir": folder.name},
        )
        self.base = Version(_number(folder), folder)
        remove_unused(self.root)


@contextlib.contextmanager
def writing(root: str | Path) -> Iterator[VersionWriter]:
    """Serialise writers of the index in `root` (a blocking flock held for the block) and clear what killed
    writers left behind before writing."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / WRITER_LOCK):
        remove_unused(root)
        w = VersionWriter(root)
        try:
            yield w
        except (
            BaseException
        ):  # e.g. a full disk: drop the half-written folder now rather than at the next write
            for folder in w.created:
                if w.base is None or folder != w.base.path:
                    shutil.rmtree(folder, ignore_errors=True)
            raise


def remove_unused(root: Path) -> list[str]:
    """Delete what no reader holds and the pointer does not name: older and half-written versions, the flat files
    of an index converted to versions, temp files of dead writers. Call under the writers' lock. Returns the names
    removed. Best effort: what cannot be removed now (a reader holds it, a permission) is left for the next writer,
    and never fails the build or add that has already switched the pointer."""
    current = read_pointer(root)
    removed = []
    for folder in version_folders(root):
        if (current is None or folder != current.path) and _remove_if_free(
            folder / READERS_LOCK, lambda f=folder: shutil.rmtree(f, ignore_errors=True)
        ):
            removed.append(folder.name)
    flat = [root / name for name in FLAT_FILES if (root / name).exists()]
    lock = root / READERS_LOCK
    if (
        current is not None
        and (flat or lock.exists())
        and _remove_if_free(lock, lambda: _unlink(*flat, lock))
    ):
        removed += [p.name for p in flat]
    for p in root.iterdir():
        if is_stale_temp(p):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else _unlink(p)
            removed.append(p.name)
    return removed


def _unlink(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _remove_if_free(lock: Path, remove: Callable[[], object]) -> bool:
    """Run `remove` while holding `lock` exclusively, if no reader holds it."""
    try:
        fd = acquire_lock(lock, blocking=False)
    except OSError:  # BlockingIOError: a reader holds it; others: cannot be locked here, so leave it
        return False
    try:
        remove()
    finally:
        os.close(fd)
    return True


def version_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir())


def _number(folder: Path) -> int:
    m = _VERSION.fullmatch(folder.name)
    assert m is not None, folder
    return int(m.group(1))
