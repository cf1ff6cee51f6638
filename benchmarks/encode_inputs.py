"""Deterministic benchmark inputs: caption-like texts of realistic lengths and JPEG files on disk.

Texts mix short COCO-style captions (8–20 words) with long ShareGPT4V/Urban1K-style descriptions (60–200 words), the
two kinds of text UniME is evaluated on (docs/benchmarks.md#flickr30k-and-coco, #long-captions). Images are JPEG
files so that decoding is part of the measured work, as it is when a corpus is embedded from disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

WORDS = (  # noqa: SIM905 (a word list reads best as prose)
    "a an the two three several many some small large big little young old red blue green yellow white black brown "
    "orange pink gray wooden metal glass plastic man woman child boy girl person people dog cat horse bird cow sheep "
    "car bus truck train bicycle motorcycle boat airplane street road sidewalk building house window door table chair "
    "bench bed couch kitchen room wall floor field grass tree trees flowers water river lake beach ocean sky clouds "
    "mountain snow hill park city sign light pole fence plate food pizza sandwich cake bowl cup bottle phone laptop "
    "computer book bag umbrella kite ball frisbee skateboard surfboard is are sitting standing walking running riding "
    "holding looking eating playing flying lying parked next to on in of with near behind front top under over while "
    "and at by from into along across background foreground left right center side corner view scene shows appears "
    "bright dark sunny cloudy busy quiet crowded empty colorful detailed wearing shirt hat jacket dress carrying"
).split()


def captions(n: int, *, seed: int = 0, long_fraction: float = 0.3) -> list[str]:
    """`n` texts: about `long_fraction` of them long descriptions, the rest short captions, in shuffled order."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(60, 201)) if rng.random() < long_fraction else int(rng.integers(8, 21))
        words = rng.choice(WORDS, size=k)
        out.append(" ".join(words).capitalize() + ".")
    return out


def write_images(out_dir: Path, n: int, *, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """`n` JPEG files of `size` (width, height): smooth colour fields with noise, so they compress like photos."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        fx, fy, phase = [*rng.uniform(0.002, 0.02, 2).tolist(), rng.uniform(0, 6.3)]
        base = np.stack([np.sin(fx * xx * (c + 1) + fy * yy + phase + c) for c in range(3)], axis=-1)
        pix = 127.5 * (base + 1) + rng.normal(0, 12, (h, w, 3))
        p = out_dir / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def load_items(
    preset: Any, cache: Path, n_images: int, n_texts: int, seed: int
) -> tuple[list[Any], list[Any]]:
    """(image items, text items) for `preset`: its JPEG files (written once into `cache`) and captions."""
    from uniretrieve.types import Item

    w, h = preset.image_size
    img_dir = cache / f"images-{w}x{h}-{n_images}-s{seed}"
    paths = sorted(img_dir.glob("*.jpg")) if img_dir.exists() else []
    if len(paths) != n_images:
        paths = write_images(img_dir, n_images, size=(w, h), seed=seed)
    return [Item(image=p) for p in paths], [Item(text=t) for t in captions(n_texts, seed=seed)]
