"""Queries: parsing the command line and query files into weighted terms, and combining their embeddings.

A query is a weighted sum of terms, each a text, an image, or a text+image pair (a composed query, as CIRR-style
tasks need), written as rclip writes them (yurijmikhalevich/rclip README):

    "golden retriever"                       one text
    "2:golden retriever" + ./pool.jpg - fruit  2·e(text) + e(image) − e(text), renormalised
    "a dog" --image ./pool.jpg               one composed text+image item

A term that names an existing image file is an image; anything else is text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniretrieve.types import Item

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_WEIGHT = re.compile(r"^(-?\d+(?:\.\d+)?):(.+)$", re.S)


class QueryError(ValueError):
    """A query that cannot be understood; names the query (and file line) and what to fix."""


@dataclass(frozen=True)
class Term:
    weight: float
    item: Item


@dataclass
class Query:
    """A weighted sum of items; `label` is how the query is shown in results."""

    terms: list[Term]
    label: str
    qid: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def is_image_path(text: str, base: Path | None = None) -> Path | None:
    """The path if `text` names an existing image file (relative to `base` first, then the working directory)."""
    if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    for cand in ([base / text] if base else []) + [Path(text)]:
        if cand.is_file():
            return cand
    raise QueryError(f"query term {text!r} looks like an image path but no such file exists")


def parse_terms(
    args: Sequence[str], *, instruction: str | None = None, base: Path | None = None
) -> list[Term]:
    """`["2:golden retriever", "+", "./pool.jpg", "-", "fruit"]` → weighted terms. A lone string is one term."""
    terms: list[Term] = []
    sign = 1.0
    expect_term = True
    for tok in args:
        if tok in ("+", "-") and not expect_term:
            sign, expect_term = (1.0 if tok == "+" else -1.0), True
            continue
        if not expect_term:
            raise QueryError(f"expected '+' or '-' between query terms, got {tok!r}")
        weight, body = 1.0, tok
        m = _WEIGHT.match(tok)
        if m:
            weight, body = float(m.group(1)), m.group(2)
        if not body.strip():
            raise QueryError(f"empty query term in {' '.join(args)!r}")
        path = is_image_path(body, base)
        item = (
            Item(image=str(path), instruction=instruction)
            if path
            else Item(text=body, instruction=instruction)
        )
        terms.append(Term(sign * weight, item))
        expect_term = False
    if expect_term and terms:
        raise QueryError(f"query {' '.join(args)!r} ends with an operator")
    return terms


def build_query(
    args: Sequence[str], *, image: str | Path | None = None, instruction: str | None = None
) -> Query:
    """The command-line query: positional terms, plus --image (composed with a single text term, else its own term)."""
    terms = parse_terms(args, instruction=instruction)
    if image is not None:
        if not Path(image).is_file():
            raise QueryError(f"--image {image}: no such file")
        if len(terms) == 1 and terms[0].item.image is None and terms[0].weight == 1.0:
            terms = [Term(1.0, Item(text=terms[0].item.text, image=str(image), instruction=instruction))]
        else:
            terms.append(Term(1.0, Item(image=str(image), instruction=instruction)))
    if not terms:
        raise QueryError("no query: give a text, --image PATH, or --queries FILE")
    label = " ".join(args) + (f" [image {image}]" if image is not None else "")
    return Query(terms, label.strip())


def read_query_file(path: str | Path, *, instruction: str | None = None) -> list[Query]:
    """Queries from a file: `.jsonl` objects with `text`, `image`, `instruction`, optional `id` (each line one
    query; text and image together make a composed query), or plain text with one query per non-blank line."""
    p = Path(path)
    if not p.is_file():
        raise QueryError(f"--queries {p}: no such file")
    out: list[Query] = []
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(Query([Term(1.0, Item(text=line.strip(), instruction=instruction))], line.strip()))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QueryError(f"{p}:{n}: not valid JSON ({exc.msg}); fix or remove the line") from exc
        if not isinstance(obj, dict) or not (obj.get("text") or obj.get("image")):
            raise QueryError(f"{p}:{n}: a query line needs a 'text' or an 'image' field")
        img = obj.get("image")
        if img is not None:
            cand = p.parent / img
            img = str(cand if cand.is_file() else Path(img))
            if not Path(img).is_file():
                raise QueryError(
                    f"{p}:{n}: image {obj['image']!r} not found (paths are relative to {p.parent})"
                )
        item = Item(text=obj.get("text"), image=img, instruction=obj.get("instruction", instruction))
        label = " + ".join(str(x) for x in (obj.get("text"), obj.get("image")) if x)
        qid = obj.get("id")
        out.append(Query([Term(1.0, item)], label, None if qid is None else str(qid)))
    if not out:
        raise QueryError(f"--queries {p} holds no queries")
    return out


def combine(term_vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Σ wᵢ·eᵢ over unit term vectors, L2-normalised (inner product then ranks like cosine to the mix)."""
    w = np.asarray(weights, dtype=np.float32)[:, None]
    v = (w * term_vectors).sum(axis=0)
    norm = float(np.linalg.norm(v))
    if norm < 1e-12:
        raise QueryError("the weighted query terms cancel out (their sum is the zero vector)")
    return (v / norm).astype(np.float32)
