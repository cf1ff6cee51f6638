"""`uniretrieve encode`: a folder of images or a text/mixed table → Parquet embedding shards (thin over
`uniretrieve.embed.pipeline.encode_corpus`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from uniretrieve.embed.pipeline import EncodeResult


def encode(
    input: Annotated[
        Path, typer.Argument(help="Image folder (recursive) or a .txt/.jsonl/.csv/.parquet table.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Shard directory (created or resumed).")],
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Checkpoint dir, hub id or registered name (built in: unime-tiny)."
        ),
    ] = "unime-tiny",
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter directory merged into the model.")] = None,
    prompt_regime: Annotated[str, typer.Option(help="e5v (Summary-above prompts) or mmeb.")] = "e5v",
    instruction: Annotated[str | None, typer.Option(help="One instruction for every item.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column (default: 'text').")] = None,
    image_column: Annotated[
        str | None, typer.Option(help="Image path column, relative to the table (default: 'image').")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Unique id column (default: <file>:<row>).")] = None,
    dtype: Annotated[str, typer.Option(help="Stored vector type: float16 or float32.")] = "float16",
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 16,
    workers: Annotated[int, typer.Option(help="DataLoader workers decoding and preprocessing.")] = 0,
    shard_rows: Annotated[
        int | None, typer.Option(help="Rows per shard (default: ~256 MiB of vectors).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: CUDA when present).")
    ] = None,
    model_dtype: Annotated[
        str | None, typer.Option(help="Compute dtype: bfloat16, float16, float32.")
    ] = None,
    max_text_tokens: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a directory made with other settings.")] = False,
    rank: Annotated[int | None, typer.Option(help="This process's rank (default: $RANK or 0).")] = None,
    world_size: Annotated[
        int | None, typer.Option(help="Processes splitting the input (default: $WORLD_SIZE or 1).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Embed a corpus into Parquet shards; safe to interrupt and re-run (resumes, or encodes only what changed)."""
    from uniretrieve.data.corpus import CorpusError
    from uniretrieve.embed.config import EncodeConfig
    from uniretrieve.embed.manifest import ManifestError
    from uniretrieve.embed.pipeline import encode_corpus

    console = Console(stderr=True)
    try:
        config = EncodeConfig(
            input=str(input),
            output=str(output),
            model=model,
            adapter=adapter,
            prompt_regime=prompt_regime,
            instruction=instruction,
            text_column=text_column,
            image_column=image_column,
            id_column=id_column,
            dtype=dtype,
            batch_size=batch_size,
            workers=workers,
            shard_rows=shard_rows,
            device=device,
            model_dtype=model_dtype,
            max_text_tokens=max_text_tokens,
            overwrite=overwrite,
            rank=rank,
            world_size=world_size,
            progress=progress,
        )
        result = encode_corpus(config)
    except (CorpusError, ManifestError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from exc
    except KeyboardInterrupt:
        console.print(
            f"interrupted: finished shards are kept; run the same command again to resume into {output}"
        )
        raise typer.Exit(code=130) from None
    Console().print(summary_table(result))


def summary_table(result: EncodeResult) -> Table:
    title = f"encode → {result.output}"
    if result.world_size > 1:
        title += f" (rank {result.rank}/{result.world_size})"
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    if result.segment is None:
        # an empty input is most likely the wrong file or column; say so rather than "up to date"
        table.add_row(
            "up to date: nothing to encode" if result.total_rows else "the input holds no items", "0"
        )
    table.add_row("encoded", str(result.encoded))
    for kind, n in sorted(result.skipped.items()):
        table.add_row(f"skipped: {kind}", str(n))
    table.add_row("truncated texts", str(result.truncated))
    if result.stale_rows:
        table.add_row("stored rows whose input is gone (kept)", str(result.stale_rows))
    table.add_row("rows in directory", str(result.total_rows))
    table.add_row("directory complete", "yes" if result.complete else "no (other ranks still running?)")
    table.add_row("time (s)", f"{result.seconds:.1f}")
    table.add_row("items/s", f"{result.items_per_s:.1f}")
    if sum(result.skipped.values()):
        table.caption = f"skipped inputs and reasons: {result.output / 'errors.jsonl'}"
    return table
