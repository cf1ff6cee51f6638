"""Corpora as lazy streams of `Record`s: image folders and text/mixed tables (.txt, .jsonl, .csv, .parquet).

Reading never holds more than one Parquet batch or one line in memory. Records come in a deterministic order (sorted
relative paths for folders, file order for tables), so position i means the same row in every run and every rank.
A row that cannot be used (bad JSON, non-UTF-8 bytes, empty text, missing image file ...) is still yielded, with
`error` set, so the run reports it instead of crashing or silently dropping it. Images are decoded later (in
DataLoader workers); here only their bytes are hashed.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uniretrieve.data.checks import escape_name, has_surrogates
from uniretrieve.io import file_sha256

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
TABLE_EXTENSIONS = frozenset({".txt", ".jsonl", ".csv", ".parquet"})


class CorpusError(ValueError):
    """A corpus that cannot be read at all (unknown format, missing column, duplicate ids); names the file."""


@dataclass(frozen=True)
class Record:
    """One input row. `image` is an absolute path; `metadata` the user's other columns as a JSON object string."""

    position: int
    id: str
    source: str
    text: str | None = None
    image: str | None = None
    instruction: str | None = None
    group_id: str | None = None
    metadata: str | None = None
    content_hash: str = ""
    error: str | None = None

    @property
    def modality(self) -> str:
        if self.image is None:
            return "text"
        return "image" if self.text is None else "image_text"


@dataclass(frozen=True)
class CorpusSpec:
    """Where the corpus is and which columns mean what (None: the default names `text`, `image`, `id`)."""

    path: str
    text_column: str | None = None
    image_column: str | None = None
    id_column: str | None = None
    instruction: str | None = None
    instruction_column: str = "instruction"
    group_column: str = "group_id"
    allow_outside_root: bool = False
    """Read image paths that resolve outside the corpus root (the table's folder, or the image folder)."""


# --- hashing ---------------------------------------------------------------------------------------------------
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hash(path: Path) -> str:
    return file_sha256(path, chunk=1 << 20)  # images are small: a 1 MiB read covers most in one call


def _try_file_hash(path: Path) -> tuple[str, str | None]:
    """(sha256, None) or ("", reason)."""
    try:
        return file_hash(path), None
    except OSError as exc:
        return "", f"unreadable: {exc.strerror or exc}"


HASH_BLOCK = 256


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=min(8, (os.cpu_count() or 1) + 2), thread_name_prefix="uniretrieve-hash"
    )


def content_hash(
    text: str | None = None, image_hash: str | None = None, instruction: str | None = None
) -> str:
    """sha256 of what is embedded. A lone image is the plain sha256 of its bytes and a lone text that of its UTF-8
    (checkable with `sha256sum`); combinations hash the tagged parts."""
    if instruction is None and (text is None) != (image_hash is None):
        return image_hash if image_hash is not None else sha256_hex(text.encode("utf-8"))  # type: ignore[union-attr]
    parts = []
    if text is not None:
        parts.append("t:" + sha256_hex(text.encode("utf-8")))
    if image_hash is not None:
        parts.append("i:" + image_hash)
    if instruction is not None:
        parts.append("n:" + sha256_hex(instruction.encode("utf-8")))
    return sha256_hex("|".join(parts).encode())


# --- the corpus ------------------------------------------------------------------------------------------------
class Corpus:
    """A lazily read corpus. `records()` streams every row; `kind` is "images" or the table's extension."""

    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        self.path = Path(spec.path)
        if not self.path.exists():
            raise CorpusError(f"input {self.path} does not exist")
        if self.path.is_dir():
            self.kind = "images"
        elif self.path.suffix.lower() in TABLE_EXTENSIONS:
            self.kind = self.path.suffix.lower()[1:]
        else:
            raise CorpusError(
                f"input {self.path}: unsupported format {self.path.suffix!r}; give a folder of images or a "
                f"{', '.join(sorted(TABLE_EXTENSIONS))} file"
            )
        self.ignored_files = 0
        """Files in an image folder skipped for their extension (counted, not errors: sidecar .txt/.json files)."""

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "kind": self.kind}

    def records(self, hash_content: bool = True) -> Iterator[Record]:
        """Every row, in order. `hash_content=False` skips reading image bytes (content_hash left empty for
        images) — for a second pass whose hashes are already known."""
        if self.kind == "images":
            yield from self._folder(hash_content)
            return
        from uniretrieve.data.tables import TableReader  # here: tables.py builds on this module's Record

        tables = TableReader(self)
        if self.kind == "txt":
            yield from tables.read_txt()
        elif self.kind == "jsonl":
            yield from tables.read_jsonl(hash_content)
        elif self.kind == "csv":
            yield from tables.read_csv(hash_content)
        else:
            yield from tables.read_parquet(hash_content)

    # --- image folders ---------------------------------------------------------------------------------------------
    def image_paths(self) -> list[str]:
        """Relative POSIX paths of the folder's images, sorted (a list of strings: ~100 bytes a file). Hidden
        files and folders are skipped and counted in `ignored_files`."""
        out = []
        ignored = 0
        for p in self.path.rglob("*"):
            hidden = any(part.startswith(".") for part in p.relative_to(self.path).parts)
            if hidden:  # .DS_Store, macOS `._x.jpg` resource forks, .git/ …
                ignored += p.is_file()
            elif p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir():
                out.append(p.relative_to(self.path).as_posix())
            elif p.is_file():
                ignored += 1
        self.ignored_files = ignored
        out.sort()
        return out

    def _folder(self, hash_content: bool) -> Iterator[Record]:
        instr = self.spec.instruction
        paths = self.image_paths()
        for start in range(0, len(paths), HASH_BLOCK):
            block = paths[start : start + HASH_BLOCK]
            # file reads and sha256 release the GIL: hash a bounded block of files on threads
            hashed = (
                list(_hash_pool().map(_try_file_hash, [self.path / r for r in block])) if hash_content else []
            )
            for i, rel in enumerate(block):
                yield self._image_record(start + i, rel, hashed[i] if hash_content else ("", None), instr)

    def _image_record(self, pos: int, rel: str, hashed: tuple[str, str | None], instr: str | None) -> Record:
        path = self.path / rel
        if has_surrogates(rel):  # a file name that is not UTF-8: no id can hold it as is
            shown = escape_name(rel)
            return self._bad(
                pos, shown, f"file name is not valid UTF-8 (shown with \\x escapes): {shown}; rename it"
            )
        image_h, err = hashed
        if err is None and not self._inside_root(path):
            err = self._outside_message(rel, path)
        h = content_hash(image_hash=image_h, instruction=instr) if image_h else ""
        return Record(
            position=pos,
            id=rel,
            source=rel,
            image=str(path.resolve()),
            instruction=instr,
            group_id=rel,
            content_hash=h,
            error=err,
        )

    def root(self) -> Path:
        """The folder corpus paths must stay inside: the image folder, or the table's folder."""
        return (self.path if self.kind == "images" else self.path.parent).resolve()

    def _inside_root(self, path: Path) -> bool:
        """Whether `path` (symlinks and `..` resolved) lies in the corpus root, or the user allowed any path."""
        return self.spec.allow_outside_root or path.resolve().is_relative_to(self.root())

    def _outside_message(self, shown: str, path: Path) -> str:
        return (
            f"image path outside the corpus folder {self.root()}: {shown} (resolves to {path.resolve()}); "
            "pass --allow-outside-root to read it"
        )

    def _bad(self, row: int, source: str, reason: str) -> Record:
        return Record(position=row, id=source, source=source, error=reason)


def with_hash(record: Record) -> Record:
    """The record with its content hash, for records read with `hash_content=False` (reads the image bytes; runs
    in DataLoader workers, next to the decode of the same bytes)."""
    if record.error is not None or record.content_hash or record.image is None:
        return record
    try:
        image_h = file_hash(Path(record.image))
    except OSError as exc:
        return replace(record, error=f"image unreadable: {record.image}: {exc.strerror or exc}")
    return replace(record, content_hash=content_hash(record.text, image_h, record.instruction))


def open_corpus(spec: CorpusSpec) -> Corpus:
    return Corpus(spec)


__all__ = [
    "IMAGE_EXTENSIONS",
    "TABLE_EXTENSIONS",
    "Corpus",
    "CorpusError",
    "CorpusSpec",
    "Record",
    "content_hash",
    "open_corpus",
    "with_hash",
]
