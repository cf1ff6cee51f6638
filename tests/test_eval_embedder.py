"""The evaluation embedder (planned batches, DataLoader workers, dedupe, cache) equals plain `Encoder.encode`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.eval_helpers import png_bytes
from uniretrieve.eval.cache import EmbeddingCache
from uniretrieve.eval.embedder import Embedder
from uniretrieve.eval.sources import Source


@pytest.fixture(scope="module")
def encoder(tiny_checkpoints):
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(str(tiny_checkpoints("llava")))


def _sources(image_files: list[Path]) -> list[Source]:
    return [
        Source(text="a red circle above a blue square"),
        Source(image_path=str(image_files[0])),
        Source(text="two"),
        Source(image_bytes=png_bytes(7), origin="mem"),
        Source(text="a caption with an image", image_path=str(image_files[1])),
        Source(text="two"),  # duplicate: encoded once, returned twice
        Source(image_path=str(image_files[2])),
        Source(text="the quick brown fox jumps over the lazy dog " * 3),
    ]


@pytest.mark.parametrize("workers", [0, 1])
def test_embedder_equals_plain_encode(encoder, image_files: list[Path], tmp_path: Path, workers: int) -> None:
    sources = _sources(image_files)
    expect = encoder.encode([s.to_item() for s in sources], batch_size=2)
    emb = Embedder(encoder, EmbeddingCache(tmp_path, encoder.describe()), batch_size=3, workers=workers)
    with emb:
        got = emb.embed("mix", sources)
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert emb.encoded == 7 and emb.reused == 0  # 8 sources, one duplicate
    again = Embedder(encoder, EmbeddingCache(tmp_path, encoder.describe()), show_progress=False)
    np.testing.assert_array_equal(again.embed("mix", sources), got)
    assert again.encoded == 0 and again.reused == 7
