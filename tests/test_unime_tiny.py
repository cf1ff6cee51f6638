"""The built-in `unime-tiny`: it ships inside the package, loads by name, and its card matches its scores."""

from __future__ import annotations

import json
from pathlib import Path

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


# Floors well below the shipped model's values on these 100 scenes; the held-out 1,000-scene scores are the model
# card's. Measured on the shipped weights (2026-12-06): R@1 0.94 / 0.92 (chance 0.01).
LONG_R1_FLOOR = 0.75
# Measured 0.56 (99 of 177 pairs; chance 0.5): the shipped model hardly reads attribute binding yet (target 0.7,
# benchmarks/RESULTS.md); this floor only catches a model that prefers the swapped caption systematically.
SWAP_FLOOR = 0.4


def test_long_captions_and_attribute_swaps_on_100_unseen_scenes(tiny: Encoder, tmp_path) -> None:
    """Quality regression on a small fixed held-out set: long-caption R@1 both ways among 100 scenes, and how often
    the true SugarCrepe-style swap caption scores above the swapped one."""
    from uniretrieve.eval.datasets_longcap import load_urban1k
    from uniretrieve.eval.metrics import retrieval_recalls
    from uniretrieve.models.images import load_image
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = tmp_path / "s"
    generate(
        GenerateConfig(
            out=str(out), seed=1, train_scenes=0, test_scenes=100, layouts=("urban1k", "sugarcrepe")
        )
    )
    rs = load_urban1k(out / "urban1k")
    images = [load_image(Path(str(s.image_path))) for s in rs.images]
    img = tiny.encode_images(images)
    r = retrieval_recalls(tiny.encode_texts([str(s.text) for s in rs.texts]), img, rs.text_to_image, ks=(1,))
    assert r["t2i"][1] >= LONG_R1_FLOOR and r["i2t"][1] >= LONG_R1_FLOOR, r
    index = {Path(str(s.image_path)).stem: i for i, s in enumerate(rs.images)}
    rows = [
        row
        for name in ("swap_att.json", "swap_obj.json")
        for row in json.loads((out / "sugarcrepe" / name).read_text()).values()
    ]
    which = np.array([index[Path(row["filename"]).stem] for row in rows])
    pos = tiny.encode_texts([row["caption"] for row in rows])
    neg = tiny.encode_texts([row["negative_caption"] for row in rows])
    swap = float(((img[which] * pos).sum(1) > (img[which] * neg).sum(1)).mean())
    assert swap >= SWAP_FLOOR, swap
