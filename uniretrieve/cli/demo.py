"""`uniretrieve demo`: generate a corpus, encode it, index it and search it with the built-in model."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    work: Annotated[str, typer.Option("--work", help="Folder for the corpus, shards and index (reused).")] = (
        "uniretrieve-demo"
    ),
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint, hub id or registered name.")] = (
        "unime-tiny"
    ),
    scenes: Annotated[int, typer.Option(help="Generated scenes (images) to index.")] = 2000,
    k: Annotated[int, typer.Option("-k", help="Hits shown per query.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.")] = 32,
) -> None:
    """Run the whole pipeline on generated scenes: corpus → embeddings → FAISS index → hits."""
    from uniretrieve.demo import DemoConfig, run_demo

    run_demo(DemoConfig(work=work, model=model, scenes=scenes, k=k, batch_size=batch_size))
