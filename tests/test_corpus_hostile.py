"""Corpus readers on hostile or broken input: a non-UTF-8 file name, paths leaving the corpus folder, CSV rows with
an extra field or an unclosed quote, non-string text — each an error naming file and row, or a recorded skip,
never a stopped corpus or a silently changed row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_image
from tests.encode_helpers import read_dir
from uniretrieve.data.corpus import Corpus, CorpusError, CorpusSpec
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.pipeline import encode_corpus
from uniretrieve.embed.plan import build_listing
from uniretrieve.embed.writer import read_errors


def records(path: Path, **kw):
    return list(Corpus(CorpusSpec(path=str(path), **kw)).records())


def errors(recs) -> dict[str, str]:
    return {r.source: r.error for r in recs if r.error}


def test_non_utf8_file_name_is_skipped_and_recorded(tmp_path, tiny_model_dir, tiny_encoder) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    make_image(1).save(root / "a.png")
    make_image(2).save(os.fsdecode(str(root).encode() + b"/b\xff.png"))
    recs = records(root)
    assert [r.id for r in recs] == ["a.png", "b\\xff.png"] and recs[0].error is None
    assert "not valid UTF-8" in recs[1].error and "b\\xff.png" in recs[1].error
    out = tmp_path / "out"
    cfg = EncodeConfig(input=str(root), output=str(out), model=str(tiny_model_dir), progress=False)
    res = encode_corpus(cfg, encoder=tiny_encoder)
    assert res.encoded == 1 and res.complete
    assert [e["id"] for e in read_errors(out)] == ["b\\xff.png"]
    assert read_dir(out)[0] == ["a.png"]


def test_table_image_paths_outside_the_corpus_are_refused(tmp_path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    make_image(3).save(outside / "s.png")
    corpus = tmp_path / "corpus"
    (corpus / "pics").mkdir(parents=True)
    make_image(4).save(corpus / "pics" / "ok.png")
    (corpus / "pics" / "link.png").symlink_to(outside / "s.png")
    rows = [
        {"image": "pics/ok.png"},
        {"image": "../secret/s.png"},
        {"image": str(outside / "s.png")},
        {"image": "pics/link.png"},
        {"image": "pics/../pics/ok.png"},
    ]
    table = corpus / "items.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = errors(records(table))
    assert sorted(bad) == ["items.jsonl:1", "items.jsonl:2", "items.jsonl:3"]
    assert all("outside the corpus folder" in e and "--allow-outside-root" in e for e in bad.values())
    assert all(r.content_hash == "" for r in records(table) if r.error)  # never read
    assert errors(records(table, allow_outside_root=True)) == {}


def test_image_folder_symlink_out_of_the_folder_is_refused(tmp_path) -> None:
    outside = tmp_path / "secret.png"
    make_image(5).save(outside)
    root = tmp_path / "imgs"
    root.mkdir()
    make_image(6).save(root / "a.png")
    (root / "b.png").symlink_to(outside)
    assert list(errors(records(root))) == ["b.png"]
    assert errors(records(root, allow_outside_root=True)) == {}


def test_csv_extra_field_is_a_recorded_error(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('id,text\n1,a red circle\n2,two, green squares\n3,"quoted, fine"\n4,short\n')
    recs = records(p)
    assert errors(recs) == {"t.csv:1": "3 fields at line 3, the header has 2 (an unquoted comma?)"}
    assert [r.text for r in recs if not r.error] == ["a red circle", "quoted, fine", "short"]


def test_csv_unclosed_quote_names_file_and_row(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('id,text\n1,fine\n2,"never closed\n3,swallowed\n4,also swallowed\n')
    with pytest.raises(CorpusError, match=r"t\.csv row 1 \(line 3\): a quoted field is never closed"):
        build_listing(Corpus(CorpusSpec(path=str(p))))


def test_csv_stray_quote_is_one_bad_row(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('id,text\n1,"a" b\n2,fine\n')
    recs = records(p)
    assert list(errors(recs)) == ["t.csv:0"] and "malformed CSV at line 2" in recs[0].error
    assert [r.text for r in recs if not r.error] == ["fine"]


def test_csv_multiline_quoted_field_still_reads(tmp_path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('id,text\n1,"two\nlines"\n2,next\n')
    assert [r.text for r in records(p)] == ["two\nlines", "next"]


def test_non_string_text_in_parquet_and_jsonl_is_refused(tmp_path) -> None:
    t = pa.table({"text": pa.array([[1, 2], [3]], pa.list_(pa.int64())), "id": ["a", "b"]})
    pq.write_table(t, tmp_path / "t.parquet")
    bad = errors(records(tmp_path / "t.parquet"))
    assert bad == {
        "t.parquet:0": "column 'text' holds a list ([1, 2]), not a string",
        "t.parquet:1": "column 'text' holds a list ([3]), not a string",
    }
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": 5}\n{"text": {"a": 1}}\n{"text": "ok", "image": 7}\n{"text": "fine", "n": 3}\n')
    bad = errors(records(p))
    assert bad == {
        "t.jsonl:0": "column 'text' holds a int (5), not a string",
        "t.jsonl:1": "column 'text' holds a dict ({'a': 1}), not a string",
        "t.jsonl:2": "column 'image' holds a int (7), not a string",
    }


def test_jsonl_lone_surrogate_escape_is_a_bad_row(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "bad \\udcff"}\n{"text": "good"}\n')
    recs = records(p)
    assert list(errors(recs)) == ["t.jsonl:0"]
    build_listing(Corpus(CorpusSpec(path=str(p))))  # no UnicodeEncodeError
