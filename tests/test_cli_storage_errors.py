"""A full disk, a read-only output and a hostile `--where` end in one line naming the path or the problem, exit
code 2, never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.encode_helpers import make_image_folder
from uniretrieve.cli.app import app
from uniretrieve.cli.options import storage_error, user_errors
from uniretrieve.search.filters import FilterError, WhereFilter

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def encode(inp: Path, out: Path, model: Path):
    return runner.invoke(
        app,
        ["encode", str(inp), "-o", str(out), "-m", str(model), "--no-progress", "--device", "cpu"],
        env=ENV,
    )


def one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit | None)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def test_full_disk_while_writing_shards(tmp_path, tiny_model_dir, tiny_encoder, monkeypatch) -> None:
    import uniretrieve.embed.writer as writer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(writer.pq, "write_table", full)
    out = tmp_path / "out"
    line = one_line_error(encode(make_image_folder(tmp_path / "imgs", n=2, bad=False), out, tiny_model_dir))
    assert line.startswith("error: no space left on the device: ") and str(out) in line


def test_read_only_output(tmp_path, tiny_model_dir, tiny_encoder, monkeypatch) -> None:
    out = tmp_path / "ro" / "out"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == out:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    line = one_line_error(encode(make_image_folder(tmp_path / "imgs", n=2, bad=False), out, tiny_model_dir))
    assert line == f"error: read-only file system: {out}; choose a writable output"


def test_storage_error_reads_pyarrow_text_and_leaves_others_alone() -> None:
    assert storage_error(OSError("IOError: No space left on device")).startswith("no space left")
    assert storage_error(OSError(errno.ECONNRESET, "reset")) is None
    assert storage_error(RuntimeError("boom")) is None
    wrapped = RuntimeError("writing shards to /x failed")
    wrapped.__cause__ = OSError(errno.EACCES, "Permission denied", "/x/part-000000.parquet")
    assert storage_error(wrapped) == (
        "permission denied: /x/part-000000.parquet (writing shards to /x failed); "
        "fix the permissions or choose another path"
    )
    with pytest.raises(OSError), user_errors():  # not a storage problem: still a real error
        raise OSError(errno.ECONNRESET, "reset")


def test_deeply_nested_where_is_one_error() -> None:
    with pytest.raises(FilterError, match="more than 100 nested parentheses"):
        WhereFilter("(" * 3000 + "id = 'a'" + ")" * 3000, ["id"])
    with pytest.raises(FilterError, match="nested"):
        WhereFilter("not " * 3000 + "id = 'a'", ["id"])
    WhereFilter("(" * 50 + "id = 'a'" + ")" * 50, ["id"])  # ordinary nesting still parses
