"""`uniretrieve demo`: generate a corpus, encode it, index it and search it with the built-in model."""

from __future__ import annotations

from uniretrieve.cli.options import config_command, user_errors
from uniretrieve.demo import DemoConfig


@config_command(DemoConfig)
def demo(cfg: DemoConfig) -> None:
    """Run the whole pipeline on generated scenes: corpus → embeddings → FAISS index → hits."""
    from uniretrieve.demo import run_demo

    with user_errors():
        run_demo(cfg)
