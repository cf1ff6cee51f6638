"""`uniretrieve eval BENCH --data PATH --model M`: the paper's benchmarks from local copies, scores beside the paper's."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from uniretrieve.cli.options import config_command, fail, user_errors
from uniretrieve.eval.benchmarks import BENCHMARKS

if TYPE_CHECKING:
    from uniretrieve.eval.config import EvalConfig


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uniretrieve" / "eval"


@config_command("uniretrieve.eval.config:EvalConfig")
def eval_command(
    cfg: EvalConfig,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="Write the results JSON here.")] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Embedding cache root (default: ~/.cache/uniretrieve/eval)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write cached embeddings.")
    ] = False,
    paper_row: Annotated[
        str | None,
        typer.Option("--paper-row", help="Paper row to compare with (label or model name); 'none' for none."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Evaluate a model on one of the paper's benchmarks with the official metrics (data layouts below)."""
    from rich.console import Console

    from uniretrieve.eval.paper import PAPER_ROWS, find_paper_row
    from uniretrieve.eval.report import paper_numbers, print_report
    from uniretrieve.eval.runner import run_eval, write_results

    console = Console(stderr=False)
    row = None
    if paper_row is not None and paper_row.lower() != "none":
        row = find_paper_row(paper_row)
        if row is None:
            fail(f"no paper row {paper_row!r} (--paper-row); rows: {'; '.join(r.label for r in PAPER_ROWS)}")
    cfg = dataclasses.replace(cfg, cache_dir=None if no_cache else str(cache_dir or default_cache_dir()))
    with user_errors(OSError, RuntimeError):
        results = run_eval(cfg, show_progress=not quiet)
    if paper_row is None:
        row = find_paper_row(cfg.model, results["model"].get("source"), cfg.adapter)
    results["paper"] = paper_numbers(results["benchmark"], row, results["scores"])
    print_report(results, console)
    if json_out is not None:
        path = write_results(results, json_out)
        console.print(f"results → {path}")


eval_command.__doc__ = (
    (eval_command.__doc__ or "") + "\n\n" + "\n\n".join(f"{b.name}: {b.data}" for b in BENCHMARKS.values())
)
