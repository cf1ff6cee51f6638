"""`uniretrieve scenes generate`: write the generated scene corpus in the public benchmark/training layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="scenes",
    help="Generated scene corpus (images, captions, hard negatives, tasks).",
    no_args_is_help=True,
)


@app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    seed: Annotated[int, typer.Option(help="Seed; the same seed and options give byte-identical files.")] = 0,
    scenes: Annotated[int, typer.Option("--scenes", help="Number of training scenes.")] = 5000,
    test_scenes: Annotated[int, typer.Option(help="Number of held-out test scenes (benchmarks).")] = 1000,
    test_seed: Annotated[int | None, typer.Option(help="Seed of the test split (default: --seed).")] = None,
    mmeb_eval_rows: Annotated[int, typer.Option(help="Rows per MMEB-eval dataset.")] = 500,
    mmeb_eval_candidates: Annotated[int, typer.Option(help="Candidates per retrieval/grounding row.")] = 100,
    pairs_per_scene: Annotated[int, typer.Option(help="Stage-1 paraphrase pairs per training scene.")] = 2,
    layout: Annotated[
        list[str] | None,
        typer.Option(
            "--layout",
            metavar="NAME",
            help="Write only this layout (repeatable; default: all): short, sharegpt4v, urban1k, sugarcrepe, "
            "mmeb-eval, mmeb-train, nli, llava-pretrain.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary line.")] = False,
) -> None:
    """Generate train and test scenes and write every public layout under OUT (see OUT/config.json)."""
    from uniretrieve.scenes.generate import LAYOUTS, GenerateConfig
    from uniretrieve.scenes.generate import generate as run

    try:
        cfg = GenerateConfig(
            out=str(out),
            seed=seed,
            train_scenes=scenes,
            test_scenes=test_scenes,
            test_seed=test_seed,
            mmeb_eval_rows=mmeb_eval_rows,
            mmeb_eval_candidates=mmeb_eval_candidates,
            stage1_pairs_per_scene=pairs_per_scene,
            layouts=tuple(layout) if layout else LAYOUTS,
        )
        result = run(cfg, log=(lambda _m: None) if quiet else typer.echo)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    state = "already complete, nothing rewritten" if result.skipped else "written"
    typer.echo(
        f"{result.out}: {test_scenes} test + {scenes} train scenes {state}; manifest {result.out / 'config.json'}"
    )
