"""`uniretrieve train pretrain` and `uniretrieve train unime-tiny`: the built-in model's own training.

Both commands' options are their config's fields (uniretrieve/tiny/config.py), defaults included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from uniretrieve.cli.options import config_command, user_errors

if TYPE_CHECKING:
    from uniretrieve.tiny.config import PretrainConfig, TinyRecipeConfig


@config_command("uniretrieve.tiny.config:PretrainConfig")
def pretrain(cfg: PretrainConfig) -> None:
    """Generative (image → caption) pretraining of the tiny LLaVA base; the ViT stays frozen."""
    from uniretrieve.tiny.cpu import passive_omp_wait

    passive_omp_wait()  # before torch loads OpenMP
    from uniretrieve.tiny.pretrain import pretrain as run

    with user_errors():
        final = run(cfg)
    typer.echo(f"pretrained base → {final}")


@config_command("uniretrieve.tiny.config:TinyRecipeConfig")
def unime_tiny(
    cfg: TinyRecipeConfig,
    install: Annotated[
        bool, typer.Option(help="Copy the result into the package as the built-in unime-tiny.")
    ] = False,
) -> None:
    """Reproduce the built-in unime-tiny: scenes → ViT alignment → pretraining → stage 1 → stage 2 → scores."""
    from uniretrieve.tiny.cpu import passive_omp_wait

    passive_omp_wait()  # before torch loads OpenMP
    from uniretrieve.models.names import shipped_dir
    from uniretrieve.tiny.recipe import install as do_install
    from uniretrieve.tiny.recipe import run_recipe

    with user_errors():
        model = run_recipe(cfg)
        if install:
            typer.echo(f"installed → {do_install(model, shipped_dir('unime-tiny'))}")
