"""Options and helpers shared by the `uniretrieve train` commands (stage 1 and stage 2 use the same names)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from uniretrieve.cli.options import user_errors
from uniretrieve.config import TRUST_REMOTE_CODE, TRUST_REMOTE_CODE_HELP

ConfigOpt = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="A preset name (see `uniretrieve train presets`) or the path of a YAML config."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key, e.g. --set optim.lr=1e-4 (repeatable; value parsed as YAML)."
    ),
]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Run directory (config.output_dir).")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Base MLLM: directory, hub id or registered name.")
]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(TRUST_REMOTE_CODE, help=TRUST_REMOTE_CODE_HELP)]
"""Sets the config's `trust_remote_code` (pass `True if flag else None`, so a config file's own value stands)."""
RUN_ALIASES = {"--output-dir": "--output"}
"""Old spellings of the train commands' options (accepted with a note)."""
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps (replaces epochs).")]
MergeOpt = Annotated[
    bool | None,
    typer.Option(
        "--merge/--no-merge", help="Also write <output>/merged, a full model for `Encoder`/`encode`."
    ),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume", help='"auto" (default: newest checkpoint if any), "never", or a step-* directory.'
    ),
]


def max_steps_overrides(sets: list[str] | None, max_steps: int | None) -> list[str]:
    """`--set` overrides plus `--max-steps N`, which also clears a preset's `epochs` (exactly one may be set)."""
    out = list(sets or [])
    if max_steps is not None:
        out += [f"max_steps={max_steps}", "epochs=null"]
    return out


def run_values(
    model: str | None, output_dir: Path | None, merge: bool | None, resume: str | None
) -> dict[str, object]:
    """The config keys of the options every training stage has (None: keep the preset's value)."""
    return {
        "model": model,
        "output_dir": str(output_dir) if output_dir else None,
        "checkpoint.merge": merge,
        "checkpoint.resume": resume,
    }


def run_stage(
    config_cls: type,
    run: Callable[[Any], Any],
    config: str,
    overrides: list[str],
    values: dict[str, object],
    errors: tuple[type[Exception], ...],
) -> None:
    """Resolve a stage's typed config (preset or YAML < `--set` < explicit options), run it, print what it wrote.

    `errors` are the stage's user-facing failures (bad config, data or checkpoint): they end the command with a
    one-line message and exit code 2 instead of a traceback. Under torchrun only rank 0 prints.
    """
    from uniretrieve.train import distributed
    from uniretrieve.train.config import load_config

    with user_errors(*errors):
        cfg = load_config(config_cls, config, overrides, **values)
        result = run(cfg)
    if distributed.is_main():
        typer.echo(f"adapter: {result.adapter_dir}")
        if result.merged_dir:
            typer.echo(f"merged model: {result.merged_dir}")
    distributed.shutdown()
