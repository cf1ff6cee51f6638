"""The built-in `unime-tiny`: it ships inside the package, loads by name, and its card matches its scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniretrieve import Encoder
from uniretrieve.models.names import shipped_dir
from uniretrieve.tiny.model_card import markdown_table

MAX_SHIPPED_BYTES = 25 * 2**20  # the package-data budget


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder.from_pretrained("unime-tiny", device="cpu")


def test_ships_within_budget_with_card_and_scores() -> None:
    d = shipped_dir("unime-tiny")
    files = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json"} <= files
    assert {"MODEL_CARD.md", "scores.json", "recipe.json"} <= files
    assert sum(p.stat().st_size for p in d.iterdir()) <= MAX_SHIPPED_BYTES
    scores = json.loads((d / "scores.json").read_text())
    # the card's table is the one written from scores.json (the eval command reproduces scores.json)
    assert markdown_table({"unime-tiny": scores}) in (d / "MODEL_CARD.md").read_text()


def test_loads_by_name_as_a_llava_embedding_model(tiny: Encoder) -> None:
    assert tiny.family == "llava" and tiny.dim == 256
    texts = [
        "A small plain red circle in the top left corner.",
        "A large striped blue star at the bottom middle.",
    ]
    a, b = tiny.encode_texts(texts), tiny.encode_texts(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)  # batch order does not change an embedding
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(a[0] @ a[1]) < 0.9999  # different captions, different vectors


def test_matching_image_caption_pairs_stand_out_on_unseen_scenes(tiny: Encoder, tmp_path) -> None:
    """On scenes from a seed never trained on, an image is closer to its own caption than to other scenes' ones."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from uniretrieve.scenes.generate import GenerateConfig, generate

    generate(
        GenerateConfig(out=str(tmp_path / "s"), seed=4242, train_scenes=0, test_scenes=40, layouts=("short",))
    )
    rows = pq.read_table(next((tmp_path / "s" / "short").rglob("*.parquet"))).to_pylist()
    images = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows]
    sims = tiny.encode_images(images) @ tiny.encode_texts([r["text"][0] for r in rows]).T
    n = len(rows)
    matching, other = float(np.trace(sims)) / n, float(sims[~np.eye(n, dtype=bool)].mean())
    assert matching > other + 0.1, (matching, other)
    ranks = (sims > np.diag(sims)[:, None]).sum(axis=1)  # 0 = the own caption is the nearest
    assert ranks.mean() < 0.35 * n  # chance: about n / 2
