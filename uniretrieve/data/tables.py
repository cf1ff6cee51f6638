"""Table corpora (.txt, .jsonl, .csv, .parquet) read row by row into `Record`s.

One line (or one Parquet batch) in memory at a time; a row that cannot be used is yielded with `error` set.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniretrieve.data import corpus as corpus_mod  # file_hash via the module: one hashing function to patch
from uniretrieve.data.checks import BadCsvRow, has_surrogates, not_text
from uniretrieve.data.corpus import IMAGE_EXTENSIONS, Corpus, CorpusError, Record, content_hash


class TableReader:
    """The rows of one table file of `corpus`, with its column spec and root checks."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.spec = corpus.spec
        self.path = corpus.path

    def read_txt(self) -> Iterator[Record]:
        name = self.path.name
        with open(self.path, "rb") as f:
            for row, raw in enumerate(f):
                line = raw.rstrip(b"\r\n")
                try:
                    text: str | None = line.decode("utf-8")
                    err = None if text.strip() else "empty text"
                except UnicodeDecodeError as exc:
                    text, err = None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                yield self._text_record(row, f"{name}:{row}", text, err)

    def read_jsonl(self, hash_content: bool) -> Iterator[Record]:
        name = self.path.name
        with open(self.path, "rb") as f:
            for row, raw in enumerate(f):
                source = f"{name}:{row}"
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    yield self.corpus._bad(row, source, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                    continue
                except json.JSONDecodeError as exc:
                    yield self.corpus._bad(row, source, f"not a JSON object ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    yield self.corpus._bad(row, source, f"not a JSON object (a {type(obj).__name__})")
                    continue
                yield self._from_fields(row, source, obj, hash_content)

    def read_csv(self, hash_content: bool) -> Iterator[Record]:
        name = self.path.name
        # surrogateescape keeps bad bytes as lone surrogates, so one bad row is reported, not the whole file; strict
        # parsing reports a malformed row (and an unclosed quote) instead of gluing rows together
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, strict=True)
            header = self._csv_row(reader, name, -1)
            if header is None:
                header = []
            self._check_columns(header)
            row = 0
            while True:
                line = reader.line_num + 1
                try:
                    values = self._csv_row(reader, name, row)
                except BadCsvRow as exc:
                    yield self.corpus._bad(row, f"{name}:{row}", f"malformed CSV at line {line}: {exc}")
                    row += 1
                    continue
                if values is None:
                    return
                if not values:
                    continue  # a blank line (csv.DictReader skips them too)
                source = f"{name}:{row}"
                if len(values) > len(header):
                    yield self.corpus._bad(
                        row,
                        source,
                        f"{len(values)} fields at line {line}, the header has {len(header)} (an unquoted comma?)",
                    )
                elif any(has_surrogates(v) for v in values):
                    yield self.corpus._bad(row, source, "not valid UTF-8")
                else:
                    obj = dict(zip(header, values + [None] * (len(header) - len(values)), strict=True))
                    yield self._from_fields(row, source, obj, hash_content)
                row += 1

    def _csv_row(self, reader: Any, name: str, row: int) -> list[str] | None:
        """The next CSV row (None at the end); a quote never closed is an error for the whole file."""
        start = reader.line_num + 1
        try:
            return next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise CorpusError(
                    f"{self.path} row {row} (line {start}): a quoted field is never closed, so every later line "
                    'would be read into it; close or escape the quote ("" inside a quoted field)'
                ) from None
            raise BadCsvRow(str(exc)) from None

    def read_parquet(self, hash_content: bool) -> Iterator[Record]:
        import pyarrow.parquet as pq

        name = self.path.name
        pf = pq.ParquetFile(self.path)
        self._check_columns(pf.schema_arrow.names)
        row = 0
        for batch in pf.iter_batches(batch_size=8192):
            for obj in batch.to_pylist():
                yield self._from_fields(row, f"{name}:{row}", obj, hash_content)
                row += 1

    def _check_columns(self, names: list[str]) -> None:
        for flag, col in (
            ("--text-column", self.spec.text_column),
            ("--image-column", self.spec.image_column),
            ("--id-column", self.spec.id_column),
        ):
            if col is not None and col not in names:
                raise CorpusError(f"{self.path} has no column {col!r} ({flag}); its columns are {names}")
        if (
            self.spec.text_column is None
            and self.spec.image_column is None
            and not {"text", "image"} & set(names)
        ):
            raise CorpusError(
                f"{self.path} has neither a 'text' nor an 'image' column; name one with --text-column or "
                f"--image-column (columns: {names})"
            )

    def _from_fields(self, row: int, source: str, obj: dict[str, Any], hash_content: bool) -> Record:
        s = self.spec
        text_col = s.text_column or "text"
        image_col = s.image_column or "image"
        used = {text_col, image_col, s.instruction_column, s.group_column}
        if s.id_column:
            used.add(s.id_column)
        wrong = not_text(obj, (text_col, image_col, s.instruction_column))
        if wrong:
            return self.corpus._bad(row, source, wrong)
        rid = source
        if s.id_column:
            value = obj.get(s.id_column)
            if value is None or str(value) == "":
                return self.corpus._bad(row, source, f"no id in column {s.id_column!r}")
            rid = str(value)
        text = _as_text(obj.get(text_col))
        image_rel = _as_text(obj.get(image_col))
        instruction = _as_text(obj.get(s.instruction_column)) or s.instruction
        group = obj.get(s.group_column)
        meta = {k: v for k, v in obj.items() if k not in used}
        metadata = json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True) if meta else None
        err = None
        if any(has_surrogates(v) for v in (rid, text, image_rel, instruction, metadata) if v is not None):
            return self.corpus._bad(row, source, "not valid UTF-8 (a lone surrogate escape)")
        if text is not None and not text.strip():
            text = None
            err = "empty text" if image_rel is None else None
        if text is None and image_rel is None and err is None:
            err = f"no text ({text_col!r}) and no image ({image_col!r})"
        image = None
        image_h = None
        if image_rel is not None:
            p = Path(image_rel)
            p = p if p.is_absolute() else self.path.parent / p
            image = str(p.resolve())
            if not self.corpus._inside_root(p):
                err = err or self.corpus._outside_message(image_rel, p)
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                err = err or f"unsupported image format {p.suffix!r}: {image_rel}"
            elif not p.is_file():
                err = err or f"image not found: {image_rel}"
            elif hash_content and err is None:
                try:
                    image_h = corpus_mod.file_hash(p)
                except OSError as exc:
                    err = f"image unreadable: {image_rel}: {exc.strerror or exc}"
        h = ""
        if err is None and (image_h is not None or image is None):
            h = content_hash(text=text, image_hash=image_h, instruction=instruction)
        return Record(
            position=row,
            id=rid,
            source=source,
            text=text,
            image=image,
            instruction=instruction,
            group_id=None if group is None else str(group),
            metadata=metadata,
            content_hash=h,
            error=err,
        )

    def _text_record(self, row: int, source: str, text: str | None, error: str | None) -> Record:
        instr = self.spec.instruction
        h = content_hash(text=text, instruction=instr) if error is None and text is not None else ""
        return Record(
            position=row, id=source, source=source, text=text, instruction=instr, content_hash=h, error=error
        )


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas-written tables
        return None
    return value if isinstance(value, str) else str(value)
