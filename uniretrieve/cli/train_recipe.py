"""`uniretrieve train pretrain` and `uniretrieve train unime-tiny`: the built-in model's own training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uniretrieve.cli.options import user_errors


def pretrain(
    data: Annotated[
        Path, typer.Option(help="LLaVA-Pretrain json or its folder (e.g. scenes/llava-pretrain).")
    ],
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Run folder (resumes from its checkpoints).")
    ],
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (default: PretrainConfig.max_steps).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Image–caption pairs per step.")] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    vision_init: Annotated[
        Path | None,
        typer.Option(
            help="A CLIP-style run's final/ whose ViT (frozen) becomes the vision tower; without one the "
            "ViT stays random and, in our runs, the captioner never learned to read its images."
        ),
    ] = None,
    max_caption_words: Annotated[
        int | None,
        typer.Option(help="Train only on captions of at most this many words (LLaVA-style alignment)."),
    ] = None,
) -> None:
    """Generative (image → caption) pretraining of the tiny LLaVA base; the ViT stays frozen."""
    from uniretrieve.tiny.pretrain import PretrainConfig
    from uniretrieve.tiny.pretrain import pretrain as run

    steps = {} if max_steps is None else {"max_steps": max_steps}
    with user_errors():
        final = run(
            PretrainConfig(
                data=str(data),
                output_dir=str(output_dir),
                batch_size=batch_size,
                seed=seed,
                max_caption_words=max_caption_words,
                vision_init=None if vision_init is None else str(vision_init),
                **steps,
            )
        )
    typer.echo(f"pretrained base → {final}")


def unime_tiny(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="Recipe folder: data, base, stage1, stage2, model.")
    ],
    install: Annotated[
        bool, typer.Option(help="Copy the result into the package as the built-in unime-tiny.")
    ] = (False),
    pretrain_steps: Annotated[
        int | None, typer.Option(help="Generative pretraining steps (default: PretrainConfig.max_steps).")
    ] = None,
    train_scenes: Annotated[int, typer.Option(help="Training scenes to generate.")] = 5000,
) -> None:
    """Reproduce the built-in unime-tiny: scenes → ViT alignment → pretraining → stage 1 → stage 2 → scores."""
    from uniretrieve.models.names import shipped_dir
    from uniretrieve.tiny.recipe import TinyRecipeConfig, run_recipe
    from uniretrieve.tiny.recipe import install as do_install

    steps = {} if pretrain_steps is None else {"pretrain_steps": pretrain_steps}
    with user_errors():
        model = run_recipe(TinyRecipeConfig(out=str(out), train_scenes=train_scenes, **steps))
        if install:
            typer.echo(f"installed → {do_install(model, shipped_dir('unime-tiny'))}")
