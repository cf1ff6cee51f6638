"""`uniretrieve encode` through Typer's CliRunner: a table and a folder, the summary, resume/up-to-date, refusal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from typer.testing import CliRunner

from tests.encode_helpers import make_image_folder
from uniretrieve.cli.app import app

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def invoke(*args: str):
    return runner.invoke(app, ["encode", *args, "--no-progress", "--device", "cpu"], env=ENV)


def test_encode_table_then_up_to_date(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    table = tmp_path / "captions.csv"
    table.write_text("key,caption,author\nk1,a red circle,ann\nk2,,bob\nk3,a yellow star,cy\n")
    out = tmp_path / "emb"
    args = [
        str(table),
        "-o",
        str(out),
        "-m",
        str(tiny_model_dir),
        "--text-column",
        "caption",
        "--id-column",
        "key",
    ]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "encoded" in res.output and "skipped: empty text" in res.output and "errors.jsonl" in res.output
    rows = duckdb.sql(f"SELECT id, text, metadata FROM '{out}/*.parquet' ORDER BY id").fetchall()
    assert [(r[0], r[1], json.loads(r[2])) for r in rows] == [
        ("k1", "a red circle", {"author": "ann"}),
        ("k3", "a yellow star", {"author": "cy"}),
    ]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["source"], e["reason"]) for e in errors] == [("k2", "captions.csv:1", "empty text")]
    saved = json.loads((out / "encode_config.json").read_text())
    assert saved["text_column"] == "caption" and saved["model"] == str(tiny_model_dir)
    again = invoke(*args)
    assert again.exit_code == 0 and "up to date" in again.output


def test_encode_folder_float32_and_refusal(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    root = make_image_folder(tmp_path / "imgs", n=3)
    out = tmp_path / "emb"
    base = [str(root), "-o", str(out), "-m", str(tiny_model_dir), "--shard-rows", "2"]
    res = invoke(*base, "--dtype", "float32", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert "skipped: corrupt image" in res.output and "skipped: empty file" in res.output
    # sorted input: broken.jpg, empty.png | img00.png, img02.png | sub/img01.jpg — chunk 0 has no good row, no file
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-000001.parquet",
        "part-000002.parquet",
    ]
    assert json.loads((out / "manifest.json").read_text())["segments"][0]["done_chunks"] == [0, 1, 2]
    assert pq.read_schema(out / "part-000001.parquet").field("embedding").type.value_type.bit_width == 32
    refused = invoke(*base)  # float16 now: other settings
    assert refused.exit_code == 2
    assert (
        "dtype: 'float32' (directory) vs 'float16' (now)" in refused.output
        and "--overwrite" in refused.output
    )
    replaced = invoke(*base, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert pq.read_schema(out / "part-000001.parquet").field("embedding").type.value_type.bit_width == 16


def test_bad_arguments_are_clear_errors(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    table = tmp_path / "t.csv"
    table.write_text("caption\nx\n")
    res = invoke(str(table), "-o", str(tmp_path / "o"), "-m", str(tiny_model_dir), "--text-column", "body")
    assert res.exit_code == 2 and "has no column 'body' (--text-column)" in res.output
    res = invoke(str(table), "-o", str(tmp_path / "o"), "-m", str(tiny_model_dir), "--dtype", "int8")
    assert res.exit_code == 2 and "dtype must be float16 or float32" in res.output


def test_an_empty_input_says_so(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    empty = tmp_path / "none.txt"
    empty.write_text("")
    res = invoke(str(empty), "-o", str(tmp_path / "o"), "-m", str(tiny_model_dir))
    assert res.exit_code == 0, res.output
    assert "the input holds no items" in res.output and "up to date" not in res.output


def test_engine_ray_without_ray_is_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "t.txt").write_text("a line\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    r = runner.invoke(app, ["encode", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert r.exit_code == 2, r.output
    assert 'pip install "uniretrieve[ray]"' in r.output and len(r.output.strip().splitlines()) == 1
