"""Stage-1 data: sentences for textual knowledge distillation, and how rows become the texts of a batch.

Formats (chosen by `format`, or by the file suffix with "auto"):

* csv  — a header row; the SimCSE NLI file `nli_for_simcse.csv` has columns sent0, sent1, hard_neg (~275k rows;
  E5-V's training data, which UniME follows: docs/method.md#stage-1-data).
* jsonl — one JSON object per line with the same fields as string values.
* text — one sentence per line (blank lines are skipped); the only field is "text".

Row → batch policy (the paper does not say how NLI rows enter a KD batch; UNCONFIRMED,
docs/method.md#stage-1-data):

* `fields`: which columns of a row are used, in order (default sent0 and sent1; add hard_neg for triplets).
* `unit="row"` (default): a batch holds whole rows; each row contributes all of its `fields`, adjacently. A batch of
  `batch_size` texts holds `batch_size / len(fields)` rows, and every text has its row partner(s) in the batch.
  Why the default: the KD loss matches similarity *distributions*; a batch of unrelated sentences gives the teacher
  nearly uniform rows with little to transfer, while entailment partners (and, with hard_neg, contradictions) give
  each row a few high-similarity neighbours whose ranking the student has to learn, which is the discriminative
  signal stage 1 is named after.
* `unit="sentence"`: every field of every row is an independent example, shuffled separately (E5-V-style sentence
  pool); batches then rarely contain related pairs.

Bad rows fail with the file, line and field named; `skip_incomplete=true` skips rows with a missing or empty field
instead (the count is reported).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uniretrieve.train.config import ConfigError

DEFAULT_FIELDS = {"csv": ["sent0", "sent1"], "jsonl": ["sent0", "sent1"], "text": ["text"]}
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text", ".text": "text"}


@dataclass(kw_only=True)
class Stage1DataConfig:
    path: str
    """A .csv (SimCSE NLI), .jsonl or .txt file."""
    format: Literal["auto", "csv", "jsonl", "text"] = "auto"
    fields: list[str] | None = None
    """Columns used per row, in order; null = sent0, sent1 (csv/jsonl) or text (text files)."""
    unit: Literal["row", "sentence"] = "row"
    """"row": a batch holds whole rows (all `fields` of a row together); "sentence": every field value is an
    independent example."""
    max_rows: int | None = None
    """Use only the first N rows (after skipping incomplete ones)."""
    skip_incomplete: bool = False
    """Skip rows with a missing or empty field instead of failing."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("data.path must name a csv, jsonl or text file")
        if self.fields is not None and (not self.fields or len(set(self.fields)) != len(self.fields)):
            raise ConfigError(
                f"data.fields must be a non-empty list of distinct column names; got {self.fields}"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError(f"data.max_rows must be >= 1 or null; got {self.max_rows}")

    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        fmt = _SUFFIXES.get(Path(self.path).suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"data.path {self.path}: cannot tell the format from the suffix; set data.format to csv, jsonl or text"
            )
        return fmt

    def resolved_fields(self) -> list[str]:
        fmt = self.resolved_format()
        fields = self.fields or DEFAULT_FIELDS[fmt]
        if fmt == "text" and fields != ["text"]:
            raise ConfigError(f"data.fields: a text file has the single field 'text'; got {fields}")
        return list(fields)


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and line and what to do."""


@dataclass
class Stage1Data:
    """The rows of a stage-1 data file and the row → example mapping of the configured policy."""

    rows: list[tuple[str, ...]]
    fields: list[str]
    unit: str
    source: str
    skipped: int = 0

    @property
    def texts_per_example(self) -> int:
        return len(self.fields) if self.unit == "row" else 1

    @property
    def num_examples(self) -> int:
        return len(self.rows) * (len(self.fields) if self.unit == "sentence" else 1)

    def example_texts(self, example: int) -> list[str]:
        """The texts example `example` puts into a batch, adjacent and in field order."""
        if self.unit == "row":
            return list(self.rows[example])
        row, field = divmod(example, len(self.fields))
        return [self.rows[row][field]]

    def batch_texts(self, examples: Sequence[int]) -> list[str]:
        return [t for e in examples for t in self.example_texts(e)]

    def unique_texts(self) -> list[str]:
        """Every text the data can put into a batch, deduplicated, in first-seen order (for the teacher)."""
        return list(dict.fromkeys(t for row in self.rows for t in row))

    def examples_per_batch(self, batch_size: int) -> int:
        """Examples per global batch for a loss matrix of `batch_size` texts."""
        k = self.texts_per_example
        if batch_size % k:
            raise ConfigError(
                f"batch_size {batch_size} is not a multiple of the {k} texts each row contributes "
                f"(data.fields={self.fields}, data.unit=row); choose a multiple of {k}"
            )
        return batch_size // k


def _check_row(values: dict[str, object], fields: list[str], where: str) -> tuple[str, ...] | None:
    out = []
    for f in fields:
        v = values.get(f)
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        if not isinstance(v, str):
            raise DataError(f"{where}: field {f!r} must be a string; got {type(v).__name__} {v!r}")
        out.append(v)
    return tuple(out)


def load_stage1_data(cfg: Stage1DataConfig) -> Stage1Data:
    """Read the configured file into rows of `fields`; fails (or skips) on incomplete rows, naming file and line."""
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.path {path} does not exist (download nli_for_simcse.csv or point to your file)"
        )
    fmt = cfg.resolved_format()
    fields = cfg.resolved_fields()
    rows: list[tuple[str, ...]] = []
    skipped = 0

    def add(values: dict[str, object], where: str) -> bool:
        nonlocal skipped
        row = _check_row(values, fields, where)
        if row is None:
            if not cfg.skip_incomplete:
                missing = [f for f in fields if not (isinstance(values.get(f), str) and values[f].strip())]  # type: ignore[union-attr]
                raise DataError(
                    f"{where}: field(s) {missing} missing or empty; fix the row, or set data.skip_incomplete=true "
                    "to skip such rows"
                )
            skipped += 1
            return True
        rows.append(row)
        return cfg.max_rows is None or len(rows) < cfg.max_rows

    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            absent = [f for f in fields if f not in (reader.fieldnames or [])]
            if absent:
                raise DataError(
                    f"{path}: the header lacks column(s) {absent}; it has {reader.fieldnames}. Set data.fields to "
                    "the columns to use"
                )
            for record in reader:
                if not add(dict(record), f"{path}:{reader.line_num}"):
                    break
        elif fmt == "jsonl":
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{line_no}: not valid JSON ({exc.msg}); fix or remove the line"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object with fields {fields}")
                if not add(record, f"{path}:{line_no}"):
                    break
        else:
            for line in fh:
                text = line.rstrip("\r\n")
                if text.strip() and not add({"text": text}, str(path)):
                    break
    if not rows:
        raise DataError(f"{path}: no usable rows (fields {fields})")
    return Stage1Data(rows=rows, fields=fields, unit=cfg.unit, source=str(path), skipped=skipped)
