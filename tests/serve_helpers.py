"""Helpers for the service tests: a small image-folder corpus (ids with `/`, spaces and unicode) encoded by the tiny
real model, indexed, and an app over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import make_image
from tests.index_helpers import quiet

IMAGE_NAMES = ["a b/one.png", "a b/two.jpg", "c/ü 3.png", "c/d/deep.png", "top.png", "z/last.jpg"]
"""Relative paths (= ids) of the first corpus: a space, unicode, nested folders."""
MORE_NAMES = ["new/extra-1.png", "new/extra-2.png"]


def write_images(root: Path, names: list[str], seed: int = 0) -> Path:
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        make_image(seed + i, (40 + 4 * i, 36 + 2 * i)).save(p)
    return root


def encode_folder(folder: Path, out: Path, model_dir: Path, encoder: Any) -> Path:
    from uniretrieve.embed.config import EncodeConfig
    from uniretrieve.embed.pipeline import encode_corpus

    cfg = EncodeConfig(input=str(folder), output=str(out), model=str(model_dir), progress=False, device="cpu")
    encode_corpus(cfg, encoder=encoder)
    return out


def build_flat(shards: Path, out: Path) -> Path:
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ShardSource

    build_index(ShardSource([shards]), out, BuildConfig(index_type="flat", gpu=False), log=quiet)
    return out


def add_shards(index: Path, shards: Path) -> None:
    from uniretrieve.index.add import add_to_index
    from uniretrieve.index.source import ShardSource

    add_to_index(index, ShardSource([shards]), log=quiet)


def make_app(index: Path, encoder: Any, **cfg: Any) -> Any:
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.app import create_app
    from uniretrieve.serve.config import ServeConfig

    config = ServeConfig(index=str(index), **cfg)
    return create_app(config, searcher=Searcher.load(index, encoder=encoder))
