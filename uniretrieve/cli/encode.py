"""`uniretrieve encode`: a folder of images or a text/mixed table → Parquet embedding shards (thin over
`uniretrieve.embed.pipeline.encode_corpus`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from uniretrieve.cli.options import config_command, user_errors
from uniretrieve.embed.config import EncodeConfig

if TYPE_CHECKING:
    from uniretrieve.embed.pipeline import EncodeResult


@config_command(EncodeConfig)
def encode(cfg: EncodeConfig) -> None:
    """Embed a corpus into Parquet shards; safe to interrupt and re-run (resumes, or encodes only what changed)."""
    from uniretrieve.embed.pipeline import encode_corpus

    try:
        with user_errors():
            result = encode_corpus(cfg)
    except KeyboardInterrupt:
        Console(stderr=True).print(
            f"interrupted: finished shards are kept; run the same command again to resume into {cfg.output}"
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
    if result.repaired:
        table.add_row("damaged or missing shards, rows encoded again", str(len(result.repaired)))
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
