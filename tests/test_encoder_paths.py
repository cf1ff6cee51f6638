"""One embedding function, two entry points: `Encoder.build` (training) and `Encoder.load` (inference) embed alike,
before training (identity LoRA) and after it (merged adapter == unmerged training model); one device rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uniretrieve.models.device import resolve_device, resolve_dtype, resolve_precision
from uniretrieve.models.encoder import Encoder
from uniretrieve.models.loading import load_backbone
from uniretrieve.train.checkpoint import save_adapter, save_merged
from uniretrieve.train.config import LoraConfig
from uniretrieve.types import Item

pytestmark = pytest.mark.usefixtures("single_thread")


def _items(image_files: list[Path]) -> list[Item]:
    return [
        Item(text="a red circle above a blue square"),
        Item(text="star", instruction="Find the matching caption."),
        Item(image=str(image_files[0])),
        Item(image=str(image_files[1]), text="a caption with an image"),
    ]


def _train_embed(enc: Encoder, items: list[Item]) -> np.ndarray:
    """The training path: `prepare` + differentiable `embed`, one batch per modality (as the stages batch)."""
    rows: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for with_image in (False, True):
            idx = [i for i, it in enumerate(items) if (it.image is not None) == with_image]
            out = enc.embed(enc.prepare([items[i] for i in idx]).inputs)
            assert out.dtype == torch.float32
            rows.update(zip(idx, out.numpy(), strict=True))
    return np.stack([rows[i] for i in range(len(items))])


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())  # rows are unit vectors


def test_build_and_load_embed_alike(tiny_model_dir: Path, image_files: list[Path], tmp_path: Path) -> None:
    items = _items(image_files)
    loaded = Encoder.load(str(tiny_model_dir), device="cpu")
    assert Encoder.from_pretrained == Encoder.load
    reference = loaded.encode(items, batch_size=2)

    identity = Encoder.build(str(tiny_model_dir), LoraConfig(r=2, alpha=4, dropout=0.0), device="cpu")
    assert isinstance(identity, Encoder) and identity.trainable_parameters()
    assert identity.model.training  # build() leaves the peft model in train mode, gradients on
    assert _min_cos(_train_embed(identity, items), reference) >= 0.9999
    assert _min_cos(identity.encode(items, batch_size=2), reference) >= 0.9999  # inference API on it too

    torch.manual_seed(5)
    trained = Encoder.build(
        str(tiny_model_dir), LoraConfig(r=4, alpha=8, dropout=0.0, init="random", vision=True), device="cpu"
    )
    trained.model.eval()
    unmerged = _train_embed(trained, items)
    assert _min_cos(unmerged, reference) < 0.999  # the adapter really changes text and image embeddings
    adapter = save_adapter(trained, tmp_path / "adapter")
    merged = Encoder.load(str(save_merged(str(tiny_model_dir), adapter, tmp_path / "merged")), device="cpu")
    assert _min_cos(merged.encode(items, batch_size=3), unmerged) >= 0.9999
    on_base = Encoder.load(str(tiny_model_dir), device="cpu", adapter=str(adapter))
    assert _min_cos(on_base.encode(items, batch_size=3), unmerged) >= 0.9999


def test_embed_is_differentiable_only_after_build(tiny_model_dir: Path) -> None:
    enc = Encoder.build(str(tiny_model_dir), LoraConfig(r=2, alpha=4, init="random"), device="cpu")
    inputs = enc.prepare([Item(text="a dog"), Item(text="two cats")]).inputs
    enc.embed(inputs).sum().backward()
    assert all(p.grad is not None for _, p in enc.trainable_parameters())
    out = enc.forward(enc.prepare([Item(text="a dog")]))
    assert not out.requires_grad and out.device.type == "cpu"


def test_one_device_and_dtype_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device() == torch.device("cuda", 0)
    assert resolve_device(rank=3) == torch.device("cuda", 1)  # ranks started by hand share the visible GPUs
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(rank=0) == torch.device("cuda", 1)  # torchrun's LOCAL_RANK wins
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_dtype(None, cuda) == torch.bfloat16 and resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("float16", cpu) == torch.float16
    assert resolve_precision("auto", cuda) == (torch.bfloat16, torch.bfloat16)
    assert resolve_precision("auto", cpu) == (torch.float32, None)
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp8", cpu)


def test_load_backbone_passes_model_kwargs(tiny_model_dir: Path) -> None:
    loaded = load_backbone(
        str(tiny_model_dir),
        device=torch.device("cpu"),
        dtype=torch.float32,
        model_kwargs={"dtype": torch.float64, "device_map": {"": "cpu"}},
    )
    assert next(loaded.model.parameters()).dtype == torch.float64
