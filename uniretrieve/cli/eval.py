"""`uniretrieve eval BENCH --data PATH --model M`: the paper's benchmarks from local copies, scores beside the paper's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from uniretrieve.eval.benchmarks import BENCHMARKS

BENCH_NAMES = tuple(BENCHMARKS)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uniretrieve" / "eval"


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for val in values for v in val.split(",") if v.strip()]
    return out or None


def eval_command(
    benchmark: Annotated[str, typer.Argument(help=f"One of: {', '.join(BENCH_NAMES)}.", show_default=False)],
    data: Annotated[
        Path, typer.Option("--data", help="The benchmark's data folder in its public layout (see README).")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Checkpoint directory, hub id or registered name.")
    ],
    subsets: Annotated[
        list[str] | None,
        typer.Option(
            "--subsets",
            help="SugarCrepe categories or MMEB datasets (repeat, or comma-separate). Default: all.",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results JSON here.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Items per forward pass.")] = 16,
    workers: Annotated[
        int,
        typer.Option("--workers", min=0, help="Processes preparing inputs while the model runs (0: none)."),
    ] = 2,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Embedding cache root (default: ~/.cache/uniretrieve/eval)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write cached embeddings.")
    ] = False,
    image_root: Annotated[
        Path | None,
        typer.Option("--image-root", help="Image folder (ShareGPT4V, SugarCrepe, MMEB) if not under --data."),
    ] = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="LoRA adapter directory merged into the model.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cuda, cuda:1, cpu … (default: cuda if present).")
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)."),
    ] = None,
    max_text_tokens: Annotated[
        int | None, typer.Option("--max-text-tokens", help="Cut longer texts.")
    ] = None,
    paper_row: Annotated[
        str | None,
        typer.Option("--paper-row", help="Paper row to compare with (label or model name); 'none' for none."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Evaluate a model on one of the paper's benchmarks with the official metrics (data layouts below)."""
    from rich.console import Console

    from uniretrieve.eval.paper import PAPER_ROWS, find_paper_row
    from uniretrieve.eval.records import MissingDataError
    from uniretrieve.eval.report import paper_numbers, print_report
    from uniretrieve.eval.runner import EvalConfig, run_eval, write_results

    console = Console(stderr=False)
    err = Console(stderr=True)
    if benchmark.lower() not in BENCH_NAMES:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCH_NAMES)}")
    row = None
    if paper_row is not None and paper_row.lower() != "none":
        row = find_paper_row(paper_row)
        if row is None:
            labels = "; ".join(r.label for r in PAPER_ROWS)
            raise typer.BadParameter(f"no paper row {paper_row!r}; rows: {labels}", param_hint="--paper-row")
    try:
        cfg = EvalConfig(
            benchmark=benchmark.lower(),
            data=str(data),
            model=model,
            subsets=_split(subsets),
            image_root=str(image_root) if image_root else None,
            batch_size=batch_size,
            workers=workers,
            cache_dir=None if no_cache else str(cache_dir or default_cache_dir()),
            device=device,
            dtype=dtype,
            adapter=adapter,
            max_text_tokens=max_text_tokens,
        )
        results = run_eval(cfg, show_progress=not quiet)
    except MissingDataError as exc:
        err.print(f"[red]missing data:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    except (ValueError, OSError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if paper_row is None:
        row = find_paper_row(model, results["model"].get("source"), adapter)
    results["paper"] = paper_numbers(results["benchmark"], row, results["scores"])
    print_report(results, console)
    if out is not None:
        path = write_results(results, out)
        console.print(f"results → {path}")


eval_command.__doc__ = (
    (eval_command.__doc__ or "") + "\n\n" + "\n\n".join(f"{b.name}: {b.data}" for b in BENCHMARKS.values())
)
