"""Checks on values read from a corpus: text that is not a string, strings that are not UTF-8, file names that
cannot be ids as they are, malformed CSV rows."""

from __future__ import annotations

import os
from typing import Any


class BadCsvRow(Exception):
    """One malformed CSV row (the reader goes on with the next line)."""


def not_text(obj: dict[str, Any], columns: tuple[str, ...]) -> str | None:
    """Why a text, image or instruction value is not a string (a number, list, bytes …), or None: such values are
    refused rather than embedded as their Python repr."""
    for col in columns:
        v = obj.get(col)
        if v is None or isinstance(v, str) or (isinstance(v, float) and v != v):
            continue
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        return f"column {col!r} holds a {type(v).__name__} ({shown}), not a string"
    return None


def escape_name(name: str) -> str:
    """A file name decoded with surrogateescape, its undecodable bytes written as `\\xNN` (printable, UTF-8)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
