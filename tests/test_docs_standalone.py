"""The project stands alone: code cites only `docs/` (and public sources), and every `docs/…#anchor` it cites exists."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".sh", ".json"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", "runs", "data", "node_modules"}

# Notes that live outside the repository; built from parts so this file does not match itself.
FORBIDDEN = ("unime-" + "method.md", "style" + ".md", "retrieval-" + "systems.md", "shared/" + "reference")
# References to the project's own issue tracker: the word "issue" followed by a number, or "(#" and a number.
ISSUE_REF = re.compile(r"\bissues?[- ]#?\d+\b|\(#\d+\)", re.IGNORECASE)
DOC_LINK = re.compile(r"docs/([A-Za-z0-9_./-]+\.md)(?:#([A-Za-z0-9_-]+))?")


def _tracked_files() -> list[Path]:
    """Files under version control (or, outside a git checkout, the text files of the tree)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [
            p
            for p in ROOT.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
        ]
    return [p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file()]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped (hyphens and underscores kept), spaces → hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a markdown file; repeated headings get -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


FILES = _tracked_files()
OUTSIDE_DOCS = [p for p in FILES if p.relative_to(ROOT).parts[0] != "docs"]


def test_slug_rules() -> None:
    assert github_slug("Stage 2") == "stage-2"
    assert github_slug("GradCache and gathering") == "gradcache-and-gathering"
    assert github_slug("Recall at K") == "recall-at-k"
    assert github_slug("MMEB Overall") == "mmeb-overall"
    assert github_slug("The `e5v` regime: why?") == "the-e5v-regime-why"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def _lines_matching(files: Iterable[Path], match: Callable[[str], bool]) -> list[str]:
    """`path:line: text` of every line of `files` (this file excepted) that `match`es."""
    return [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()[:100]}"
        for p in files
        if p != Path(__file__).resolve()
        for i, line in enumerate(_text(p).splitlines(), 1)
        if match(line)
    ]


def test_no_citation_of_notes_outside_the_repository() -> None:
    hits = _lines_matching(OUTSIDE_DOCS, lambda line: any(s in line for s in FORBIDDEN))
    assert not hits, "cite docs/ or a public source instead:\n" + "\n".join(hits)


def test_no_issue_numbers() -> None:
    hits = _lines_matching(FILES, lambda line: ISSUE_REF.search(line) is not None)
    assert not hits, "no issue-tracker numbers in code or docs:\n" + "\n".join(hits)


def test_docs_exist() -> None:
    for name in ("method.md", "benchmarks.md"):
        assert (ROOT / "docs" / name).is_file(), name


def test_cited_docs_anchors_exist() -> None:
    problems, cited = [], 0
    for path in OUTSIDE_DOCS:
        for i, line in enumerate(_text(path).splitlines(), 1):
            for m in DOC_LINK.finditer(line):
                cited += 1
                doc, anchor = ROOT / "docs" / m.group(1), m.group(2)
                where = f"{path.relative_to(ROOT)}:{i}"
                if not doc.is_file():
                    problems.append(f"{where}: docs/{m.group(1)} does not exist")
                elif anchor and anchor not in anchors(_text(doc)):
                    problems.append(f"{where}: docs/{m.group(1)} has no heading for #{anchor}")
    assert cited > 0, "the code cites no docs/ page at all"
    assert not problems, "\n".join(problems)


def test_links_inside_docs_resolve() -> None:
    link = re.compile(r"\]\(([A-Za-z0-9_.-]*\.md)?(?:#([A-Za-z0-9_-]+))?\)")
    problems = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for m in link.finditer(_text(doc)):
            target = doc.parent / m.group(1) if m.group(1) else doc
            if not target.is_file():
                problems.append(f"{doc.name}: {m.group(0)} points to a missing file")
            elif m.group(2) and m.group(2) not in anchors(_text(target)):
                problems.append(f"{doc.name}: {m.group(0)} has no matching heading")
    assert not problems, "\n".join(problems)
