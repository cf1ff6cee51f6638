"""Options and helpers shared by the `uniretrieve train` commands (stage 1 and stage 2 use the same names)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

ConfigOpt = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="A preset name (see `uniretrieve train presets`) or the path of a YAML config."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set optim.lr=1e-4 (repeatable; value parsed as YAML)."),
]
OutputOpt = Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory (config.output_dir).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Base MLLM: directory, hub id or registered name.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps (replaces epochs).")]
MergeOpt = Annotated[
    bool | None,
    typer.Option("--merge/--no-merge", help="Also write <output-dir>/merged, a full model for `Encoder`/`encode`."),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option("--resume", help='"auto" (default: newest checkpoint if any), "never", or a step-* directory.'),
]


def fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def max_steps_overrides(sets: list[str] | None, max_steps: int | None) -> list[str]:
    """`--set` overrides plus `--max-steps N`, which also clears a preset's `epochs` (exactly one may be set)."""
    out = list(sets or [])
    if max_steps is not None:
        out += [f"max_steps={max_steps}", "epochs=null"]
    return out


