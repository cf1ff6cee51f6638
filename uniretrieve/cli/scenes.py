"""`uniretrieve scenes generate`: write the generated scene corpus in the public benchmark/training layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from uniretrieve.cli.options import config_command, register, user_errors

if TYPE_CHECKING:
    from uniretrieve.scenes.config import GenerateConfig

app = typer.Typer(
    name="scenes",
    help="Generated scene corpus (images, captions, hard negatives, tasks).",
    no_args_is_help=True,
)


@config_command("uniretrieve.scenes.config:GenerateConfig")
def generate(
    cfg: GenerateConfig,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary line.")] = False,
) -> None:
    """Generate train and test scenes and write every public layout under OUTPUT (see OUTPUT/config.json)."""
    from uniretrieve.scenes.generate import generate as run

    with user_errors():
        result = run(cfg, log=(lambda _m: None) if quiet else typer.echo)
    state = "already complete, nothing rewritten" if result.skipped else "written"
    typer.echo(
        f"{result.out}: {cfg.test_scenes} test + {cfg.train_scenes} train scenes {state}; "
        f"manifest {result.out / 'config.json'}"
    )


register(app, "generate", generate)
