"""`uniretrieve search`: query an index with text, an image, both, weighted mixes, or a file of queries."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from uniretrieve.cli.options import user_errors
from uniretrieve.config import TRUST_REMOTE_CODE, TRUST_REMOTE_CODE_HELP


def search(
    query: Annotated[
        list[str] | None,
        typer.Argument(
            help='Query terms: "text", ./image.jpg, weighted mixes like "2:golden retriever" + ./pool.jpg - fruit.'
        ),
    ] = None,
    index: Annotated[
        Path, typer.Option("--index", "-i", help="Index directory (from `uniretrieve index build`).")
    ] = Path("index"),
    k: Annotated[int, typer.Option("-k", "--k", help="Hits per query.")] = 10,
    image: Annotated[
        Path | None, typer.Option("--image", help="Query image (with a text: one composed query).")
    ] = None,
    instruction: Annotated[
        str | None, typer.Option("--instruction", help="Task instruction for the queries.")
    ] = None,
    queries: Annotated[
        Path | None, typer.Option("--queries", help="File of queries: text lines or .jsonl.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines: one object per query.")] = False,
    where: Annotated[
        str | None, typer.Option("--where", help="Filter, e.g. \"modality = 'image' and width > 512\".")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Query model (default: the index's own).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow a --model other than the index's.")] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="Model device (default: CUDA if present).")
    ] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="Search on GPUs / on the CPU.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(TRUST_REMOTE_CODE, help=TRUST_REMOTE_CODE_HELP)] = False,
) -> None:
    """Search an index; prints a table (or JSON lines with --json, always for --queries) and where the time went."""
    from rich.console import Console

    from uniretrieve.search.query import QueryError, build_query, read_query_file
    from uniretrieve.search.searcher import Searcher

    err = Console(stderr=True)
    with user_errors():
        if queries is not None:
            qs = read_query_file(queries, instruction=instruction)
            if query:
                raise QueryError("give either query terms or --queries FILE, not both")
        else:
            qs = [build_query(query or [], image=image, instruction=instruction)]
        searcher = Searcher.load(
            index, model=model, force=force, device=device, gpu=gpu, trust_remote_code=trust_remote_code
        )
        results = searcher.search(queries=qs, k=k, where=where)
    timings = {name: round(sec * 1000, 2) for name, sec in searcher.timings.items()}
    if json_out or queries is not None:
        for q, hits in zip(qs, results, strict=True):
            obj: dict[str, Any] = {"query": q.label, "hits": [h.to_dict() for h in hits]}
            if q.qid is not None:
                obj["query_id"] = q.qid
            sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        _print_table(qs[0].label, results[0])
    err.print(
        "time: "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in timings.items())
        + f" ({len(qs)} quer{'y' if len(qs) == 1 else 'ies'}, k={k}, index {searcher.meta.type})"
    )


def _print_table(label: str, hits: list[Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(label))
    for col in ("rank", "score", "id", "text or image"):
        table.add_column(col, overflow="fold")
    for h in hits:
        shown = h.text if h.modality == "text" or (h.text and not h.source) else (h.source or h.text or "")
        table.add_row(str(h.rank), f"{h.score:.4f}", escape(h.id), escape(shown or ""))
    Console().print(table)
