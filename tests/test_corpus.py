"""Corpus readers: every input format, metadata columns, relative image paths, bad rows recorded (not raised)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_image
from tests.encode_helpers import make_image_folder, make_mixed_jsonl
from uniretrieve.data.corpus import Corpus, CorpusError, CorpusSpec, content_hash
from uniretrieve.embed.plan import build_listing


def records(path: Path, **kw):
    return list(Corpus(CorpusSpec(path=str(path), **kw)).records())


def test_image_folder_recursive_sorted_all_extensions(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", n=3)
    extra = {
        "x.webp": "WEBP",
        "y.BMP": "BMP",
        "z.gif": "GIF",
        "w.tiff": "TIFF",
        "v.JPEG": "JPEG",
        "u.tif": "TIFF",
    }
    for name, fmt in extra.items():
        make_image(5, (20, 20)).save(root / name, format=fmt)
    (root / "._x.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (root / ".cache").mkdir()
    make_image(6).save(root / ".cache" / "thumb.png")
    corpus = Corpus(CorpusSpec(path=str(root)))
    recs = list(corpus.records())
    ids = [r.id for r in recs]
    assert ids == sorted(ids)
    assert "sub/img01.jpg" in ids and "notes.txt" not in ids
    assert set(extra) <= set(ids)
    assert corpus.ignored_files == 3  # the sidecar .txt and hidden files are counted, not encoded
    assert not any(i.startswith(".") or "/." in i for i in ids)
    r = next(r for r in recs if r.id == "sub/img01.jpg")
    assert r.image == str((root / "sub" / "img01.jpg").resolve()) and r.modality == "image"
    assert r.content_hash == hashlib.sha256((root / "sub" / "img01.jpg").read_bytes()).hexdigest()
    assert r.source == "sub/img01.jpg" and r.group_id == "sub/img01.jpg"
    # positions are the sorted order, so every run and every rank agrees on row i
    assert [r.position for r in recs] == list(range(len(recs)))


def test_txt_lines_empty_and_non_utf8_are_recorded(tmp_path: Path) -> None:
    p = tmp_path / "caps.txt"
    p.write_bytes(b"first caption\r\n\nthird \xff\xfe bad\nfourth\n")
    recs = records(p, instruction="Represent the caption")
    assert [r.id for r in recs] == ["caps.txt:0", "caps.txt:1", "caps.txt:2", "caps.txt:3"]
    assert recs[0].text == "first caption" and recs[0].error is None
    assert recs[1].error == "empty text"
    assert "UTF-8" in recs[2].error
    assert recs[3].instruction == "Represent the caption"
    assert recs[0].content_hash == content_hash(text="first caption", instruction="Represent the caption")


def test_jsonl_mixed_items_metadata_relative_paths(tmp_path: Path) -> None:
    path = make_mixed_jsonl(tmp_path / "d")
    recs = records(path, id_column="id")
    by = {r.id: r for r in recs}
    assert [r.id for r in recs] == ["t0", "i0", "m0", "q0", "i1", "t1"]
    assert by["t0"].modality == "text" and json.loads(by["t0"].metadata) == {"lang": "en"}
    assert by["i0"].modality == "image" and by["i0"].image == str(
        (tmp_path / "d" / "pics" / "p0.png").resolve()
    )
    assert by["m0"].modality == "image_text" and json.loads(by["m0"].metadata) == {"score": 0.5}
    assert by["q0"].instruction == "Find me an everyday image that matches" and by["q0"].metadata is None
    assert by["i1"].group_id == "g1" and by["t1"].group_id == "g1"
    img_h = hashlib.sha256((tmp_path / "d" / "pics" / "p1.png").read_bytes()).hexdigest()
    assert by["m0"].content_hash == content_hash(text="two green triangles", image_hash=img_h)
    assert (
        by["i0"].content_hash == hashlib.sha256((tmp_path / "d" / "pics" / "p0.png").read_bytes()).hexdigest()
    )
    assert all(r.source == f"items.jsonl:{r.position}" for r in recs)


def test_jsonl_bad_rows_are_records_with_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    lines = [
        b'{"text": "ok"}',
        b"{not json",
        b'["a list"]',
        b'{"text": "   "}',
        b'{"image": "missing.png"}',
        b'{"image": "doc.pdf"}',
        b'{"text": "caf\xe9"}',
        b'{"other": 1}',
    ]
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    p.write_bytes(b"\n".join(lines) + b"\n")
    recs = records(p)
    errs = [r.error for r in recs]
    assert errs[0] is None
    assert "JSON" in errs[1] and "JSON" in errs[2]
    assert errs[3] == "empty text"
    assert errs[4] == "image not found: missing.png"
    assert "unsupported image format '.pdf'" in errs[5]
    assert "UTF-8" in errs[6]
    assert "no text" in errs[7]
    assert [r.id for r in recs] == [f"bad.jsonl:{i}" for i in range(8)]


def test_csv_columns_metadata_and_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("key,caption,author\nk1,a red circle,ann\nk2,,bob\nk3,a star,\n", encoding="utf-8")
    recs = records(p, text_column="caption", id_column="key")
    assert [r.id for r in recs] == ["k1", "k2", "k3"]
    assert recs[0].text == "a red circle" and json.loads(recs[0].metadata) == {"author": "ann"}
    assert recs[1].error == "empty text"
    with pytest.raises(CorpusError, match=r"t\.csv has no column 'body' \(--text-column\)"):
        records(p, text_column="body")
    with pytest.raises(CorpusError, match="neither a 'text' nor an 'image' column"):
        records(p)


def test_csv_non_utf8_row_is_reported_alone(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(b"text\nfine\nbad \xff byte\nalso fine\n")
    recs = records(p)
    assert [r.error is None for r in recs] == [True, False, True]
    assert "UTF-8" in recs[1].error


def test_parquet_text_image_columns_and_metadata(tmp_path: Path) -> None:
    (tmp_path / "im").mkdir()
    make_image(1).save(tmp_path / "im" / "a.png")
    table = pa.table(
        {
            "uid": ["u1", "u2", "u3"],
            "caption": ["one", None, "three"],
            "path": [None, "im/a.png", "im/a.png"],
            "year": [2020, 2021, 2022],
        }
    )
    p = tmp_path / "c.parquet"
    pq.write_table(table, p)
    recs = records(p, text_column="caption", image_column="path", id_column="uid")
    assert [r.modality for r in recs] == ["text", "image", "image_text"]
    assert [json.loads(r.metadata)["year"] for r in recs] == [2020, 2021, 2022]
    assert recs[1].image == str((tmp_path / "im" / "a.png").resolve())


def test_unsupported_input_and_missing_input(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(CorpusError, match=r"unsupported format '\.xlsx'"):
        Corpus(CorpusSpec(path=str(tmp_path / "x.xlsx")))
    with pytest.raises(CorpusError, match="does not exist"):
        Corpus(CorpusSpec(path=str(tmp_path / "nope")))


def test_duplicate_ids_rejected_naming_rows(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("id,text\na,x\nb,y\na,z\n")
    with pytest.raises(CorpusError, match=r"duplicate id\(s\).*'a' at rows 0, 2"):
        build_listing(Corpus(CorpusSpec(path=str(p), id_column="id")))


def test_reading_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    p = tmp_path / "big.jsonl"
    p.write_text(
        "".join(json.dumps({"text": f"caption {i}"}) + "\n" for i in range(5000)) + '{"image": "a.png"}\n'
    )

    def boom(path: Path) -> str:
        raise AssertionError("the last row was read before it was asked for")

    monkeypatch.setattr("uniretrieve.data.corpus.file_hash", boom)
    it = Corpus(CorpusSpec(path=str(p))).records()
    assert next(it).text == "caption 0"  # streaming: the image row at the end is not touched yet
    with pytest.raises(AssertionError, match="last row"):
        list(it)
