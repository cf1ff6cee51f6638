"""The batched Encoder matches the official reference computation for every family.

Reference (UniME self_evaluate, docs/method.md#pooling): one item at a time, left padding,
`F.normalize(model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1])` through the full causal-LM
forward. Ours: the base forward only, mixed-length batches, last real token from the attention mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoProcessor

from tests.conftest import make_image
from tests.tiny_models import BUILDERS
from uniretrieve import Encoder, Item

ITEMS = [
    Item(text="a red circle"),
    Item(image=make_image(1, (48, 40))),
    Item(text="two green triangles next to a yellow star, and a long tail of extra words to pad the batch"),
    Item(text="a blue square", image=make_image(2, (64, 32))),
    Item(text="x"),
    Item(image=make_image(3, (30, 50)), instruction="Represent the given image for classification."),
    Item(text="the quick brown fox", instruction="Find me an everyday image that matches the given caption:"),
    Item(text="a longer caption about several shapes on a plain background", image=make_image(4, (40, 40))),
]


def reference_embedding(model, processor, spec, prompt: str, image) -> torch.Tensor:
    kwargs = {"text": [prompt], "return_tensors": "pt"}
    if image is not None:
        kwargs["images"] = [[image]] if spec.images_nested else [image]
    inputs = processor(**kwargs)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return F.normalize(out.hidden_states[-1][:, -1].float(), dim=-1)[0]


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_batched_encoder_matches_official_reference(family: str, tiny_checkpoints) -> None:
    path = tiny_checkpoints(family)
    enc = Encoder.from_pretrained(str(path), device="cpu")
    assert enc.family == family
    ours = enc.encode(ITEMS, batch_size=3)
    assert ours.shape == (len(ITEMS), enc.dim) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    model = getattr(transformers, enc.spec.model_class).from_pretrained(str(path), dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(str(path), **enc.spec.processor_kwargs)
    processor.tokenizer.padding_side = "left"
    for i, item in enumerate(ITEMS):
        prompt, _ = enc.input_builder.prompt(item)
        ref = reference_embedding(model, processor, enc.spec, prompt, item.image).numpy()
        cos = float(ref @ ours[i])
        assert cos >= 0.9999, f"{family} item {i}: cosine {cos:.6f}"


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_side_does_not_change_embeddings(padding_side: str, tiny_checkpoints) -> None:
    enc = Encoder.from_pretrained(str(tiny_checkpoints("llava_next")), device="cpu")
    texts = ["a", "a much longer sentence with many more tokens in it than the first one", "mid length text"]
    single = np.stack([enc.encode_texts([t])[0] for t in texts])
    enc.input_builder.tokenizer.padding_side = padding_side
    batched = enc.encode_texts(texts, batch_size=3)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_input_order_is_restored(tiny_model_dir) -> None:
    enc = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    texts = [f"caption number {i} " + "word " * (i * 3 % 7) for i in range(9)]
    together = enc.encode_texts(texts, batch_size=4)
    one_by_one = np.stack([enc.encode_texts([t])[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    # different texts give different vectors, so an order mix-up could not pass unnoticed
    assert np.abs(together[0] - together[1]).max() > 1e-3


def test_token_budget_batching_covers_every_item_once_and_changes_nothing(tiny_model_dir) -> None:
    enc = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    items = [Item(text="word " * n) for n in (1, 60, 2, 3, 50, 4)] + [
        Item(image=make_image(9)),
        Item(text="x"),
    ]
    enc.max_batch_tokens = None
    unbudgeted = enc.encode(items, batch_size=8)
    enc.max_batch_tokens = 100
    batches = list(enc.batches(items, batch_size=8))
    assert sorted(i for b in batches for i in b) == list(range(len(items)))
    long_ones = [b for b in batches if 1 in b or 4 in b]
    assert all(len(b) <= 2 for b in long_ones) and len(batches) >= 4  # long texts kept apart from short ones
    np.testing.assert_allclose(enc.encode(items, batch_size=8), unbudgeted, atol=1e-5)
