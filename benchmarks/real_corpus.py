"""A real English text corpus available offline, for the search benchmark on real embeddings.

Sources (docs/benchmarks.md#search-on-real-embeddings): the English manual pages installed under /usr/share/man
(sections 1-8, groff markup stripped) and the docstrings of Python's standard library and of the packages installed
beside numpy (torch, transformers, pyarrow, faiss, ...; test folders skipped). Both are prose written by
people for people, about many topics (commands, file formats, protocols, APIs), present on any Linux machine with
Python, and need no download.

Each source is split into sentences; a sentence is kept when it is 40-200 characters long, has at least 6 words and is
mostly letters (tables, option lists and code fragments are not). Sentences are deduplicated after case-folding and
whitespace normalisation, then ordered by the sha256 of their text, so the order does not depend on the file system:
the first `QUERY_POOL` sentences are the query pool (never in any database), the database of size n is the next n.
A larger database therefore contains every smaller one, and the embeddings of a smaller run are reused.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

QUERY_POOL = 5000
MAN_ROOT = Path("/usr/share/man")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
GROFF_ESCAPE = re.compile(r"\\f[BIRPC]|\\f\(..|\\f\[[^\]]*\]|\\s[+-]?\d|\\\(..|\\\[[^\]]*\]|\\[&|^%ce:]")
SPACES = re.compile(r"\s+")


def man_paragraphs(path: Path) -> Iterator[str]:
    """Running text of one manual page: requests (lines starting with . or ') end a paragraph and are dropped,
    font and character escapes are removed."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return
    para: list[str] = []
    for line in text.splitlines():
        if line.startswith((".", "'")) or not line.strip():
            if para:
                yield " ".join(para)
                para = []
            continue
        para.append(GROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\", ""))
    if para:
        yield " ".join(para)


def docstring_paragraphs(path: Path) -> Iterator[str]:
    """Docstring paragraphs (blank-line separated) of one Python file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield from doc.split("\n\n")


def keep(sentence: str) -> bool:
    if not 40 <= len(sentence) <= 200 or len(sentence.split()) < 6:
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters >= 0.85 * len(sentence) and sentence[0].isupper()


def sentences(paragraphs: Iterator[str]) -> Iterator[str]:
    for para in paragraphs:
        for s in SENTENCE_END.split(SPACES.sub(" ", para).strip()):
            if keep(s):
                yield s


def python_roots() -> list[Path]:
    """The standard library and the site-packages folder that holds numpy (the main environment's)."""
    import numpy

    return [Path(sysconfig.get_paths()["stdlib"]), Path(numpy.__file__).parents[1]]


def source_files(man_root: Path, py_roots: list[Path]) -> Iterator[tuple[str, Path]]:
    for section in range(1, 9):
        for path in sorted((man_root / f"man{section}").glob("*")):
            yield "man", path
    for root in py_roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts
            if "site-packages" not in rel and not {"test", "tests", "testing"} & set(rel):
                yield "py", path


def corpus(man_root: Path = MAN_ROOT, py_roots: list[Path] | None = None) -> list[str]:
    """Every kept sentence once, in sha256 order (see the module docstring)."""
    seen: dict[str, str] = {}
    for kind, path in source_files(man_root, python_roots() if py_roots is None else py_roots):
        paras = man_paragraphs(path) if kind == "man" else docstring_paragraphs(path)
        for s in sentences(paras):
            seen.setdefault(s.casefold(), s)
    return sorted(seen.values(), key=lambda s: hashlib.sha256(s.encode()).digest())


def split(texts: list[str], n: int, queries: int) -> tuple[list[str], list[str]]:
    """(database of n sentences, `queries` fresh query sentences), disjoint; see the module docstring."""
    if queries > QUERY_POOL or len(texts) < QUERY_POOL + n:
        raise ValueError(
            f"the corpus has {len(texts)} sentences: too few for {n} + a {QUERY_POOL} query pool"
        )
    return texts[QUERY_POOL : QUERY_POOL + n], texts[:queries]
