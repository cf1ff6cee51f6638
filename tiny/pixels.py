"""Decoded, preprocessed training images kept in memory: a training run decodes and resizes each image once.

The recipe's runs see every image several times (an epoch of the pre-alignment holds each image 4×, the
CLIP-style baseline ~8 epochs' worth); decoding the PNG and running the image processor again each time cost
about 15 % of a dual-encoder step on the 2-core dev VM. The cache holds exactly the tensors the image processor
returns (float32), so a cached batch is bitwise the uncached one (tests/test_recipe_speed.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from uniretrieve.models.images import load_image


class PixelCache:
    """`paths → [B, 3, H, W]` pixel values of `image_processor`, each image processed once per run."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor
        self._pixels: dict[Path, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._pixels)

    def __call__(self, paths: Sequence[Path]) -> torch.Tensor:
        todo = list(dict.fromkeys(p for p in paths if p not in self._pixels))
        if todo:
            out = self.image_processor([load_image(p) for p in todo], return_tensors="pt")["pixel_values"]
            self._pixels.update(zip(todo, out.unbind(0), strict=True))
        return torch.stack([self._pixels[p] for p in paths])
