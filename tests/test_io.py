"""uniretrieve/io.py: a failed write leaves the old content and no temp file; renames happen only on success; stale
temps are told from live ones; directories are swapped in whole."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from uniretrieve.io import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    is_stale_temp,
    job_temp_path,
    temp_path,
)


class Boom(Exception):
    pass


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a pid that no longer runs
    return p.pid


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.json"
    atomic_write_json(f, {"v": 1})
    assert f.read_text() == '{\n "v": 1\n}\n'

    def fail(fd: int) -> None:  # the disk fails after the temp file is written, before the rename
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(f, b"new")
    monkeypatch.undo()
    assert f.read_text() == '{\n "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"x", fsync=False)  # makes the folder
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"x"


def test_atomic_path_renames_only_on_success(tmp_path: Path) -> None:
    f = tmp_path / "index.faiss"
    f.write_bytes(b"old")
    with pytest.raises(Boom), atomic_path(f) as tmp:
        tmp.write_bytes(b"half")
        assert tmp.parent == tmp_path and tmp.name.startswith(".index.faiss.tmp-")
        raise Boom
    assert f.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
    with atomic_path(f) as tmp:
        tmp.write_bytes(b"new")
        assert f.read_bytes() == b"old"  # readers see the old file until the writer is done
    assert f.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_stale_temp_detection(tmp_path: Path) -> None:
    f = tmp_path / "x.parquet"
    mine = temp_path(f)
    assert mine.name == f".x.parquet.tmp-{socket.gethostname()}-{os.getpid()}-{mine.name.rsplit('-', 1)[1]}"
    assert not is_stale_temp(mine)  # its writer (this process) is alive
    host = socket.gethostname()
    assert is_stale_temp(tmp_path / f".x.parquet.tmp-{host}-{_dead_pid()}-7")
    assert not is_stale_temp(
        tmp_path / f".x.parquet.tmp-elsewhere-{_dead_pid()}-7"
    )  # another host's may live
    assert not is_stale_temp(tmp_path / "x.parquet")
    assert not is_stale_temp(job_temp_path(f))  # a job's temp is cleared by the job's next save instead


def test_atomic_dir_swaps_a_directory_in_whole(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    with atomic_dir(out) as tmp:
        assert tmp == job_temp_path(out) and tmp.is_dir()
        (tmp / "w.bin").write_bytes(b"v1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.json").write_text("{}")
        assert not out.exists()
    assert (out / "w.bin").read_bytes() == b"v1" and (out / "sub" / "c.json").is_file()

    with pytest.raises(Boom), atomic_dir(out) as tmp:
        (tmp / "w.bin").write_bytes(b"half")
        raise Boom
    assert (out / "w.bin").read_bytes() == b"v1"  # the old version, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or old directory left

    job_temp_path(out).mkdir()  # a crashed save's leftover
    (job_temp_path(out) / "junk").write_bytes(b"")
    with atomic_dir(out) as tmp:
        assert not list(tmp.iterdir())  # starts empty
        (tmp / "w.bin").write_bytes(b"v2")
    assert sorted(p.name for p in out.iterdir()) == ["w.bin"] and (out / "w.bin").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_atomic_dir_per_writer_clears_only_dead_writers_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "entry"
    host = socket.gethostname()
    dead = tmp_path / f".entry.tmp-{host}-{_dead_pid()}-1"
    remote = tmp_path / f".entry.tmp-elsewhere-{_dead_pid()}-1"
    for d in (dead, remote):
        d.mkdir()
    with atomic_dir(out, per_writer=True) as tmp:
        assert tmp == temp_path(out)
        (tmp / "v").write_bytes(b"1")
    assert (out / "v").read_bytes() == b"1"
    assert not dead.exists() and remote.exists()
