"""Stage-2 data: MMEB-train (TIGER-Lab/MMEB-train layout) → query/target pairs, with per-subset caps and weights.

Layout: `<root>/<Subset>/*.parquet` with columns `qry`, `qry_image_path`, `pos_text`, `pos_image_path` (and optional
`neg_text`, `neg_image_path`: UniME mines its negatives from the batch and ignores them, docs/method.md#stage-2-data;
`negatives: true` reads them as one labelled negative per query, docs/tiny-model.md);
image paths are relative to `image_root` (default: `root`), "" means none. The scene generator writes the same
layout (`mmeb-train/`).

Mixing subsets (the paper trains on MMEB's 20 in-distribution sets): `caps[s]` keeps at most that many rows of
subset s (a seeded random subset, so a cap never means "the first rows of one file"); `weights[s]` multiplies how
often each kept row of s appears per epoch (2.0: twice, 0.5: a seeded half; default 1.0). The resulting pool is
fixed per seed, and `ShuffledEpochs` over it makes every global batch a pure function of (seed, step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniretrieve.models.backbones import MMEB_IMAGE_PLACEHOLDER
from uniretrieve.train.config import ConfigError
from uniretrieve.types import Item

COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEGATIVE_COLUMNS = ("neg_text", "neg_image_path")


class Stage2DataError(ValueError):
    """Unusable stage-2 data; the message names the file (and row) and what to do."""


@dataclass(kw_only=True)
class Stage2DataConfig:
    root: str
    """MMEB-train folder: one sub-folder of Parquet files per subset."""
    image_root: str | None = None
    """Folder the image paths are relative to; null = `root`."""
    subsets: list[str] | None = None
    """Subsets to use; null = every sub-folder holding Parquet files."""
    caps: dict[str, int] = field(default_factory=dict)
    """Subset → at most this many rows (a seeded random choice)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Subset → how many times each kept row appears per epoch (default 1.0)."""
    image_size: int = 336
    """Images are resized to image_size × image_size before the processor (UniME paper §4.1: 336×336)."""
    negatives: bool = False
    """Read `neg_text` / `neg_image_path` where a file has them: each row's own negative joins its query's softmax
    (train/losses.py hard_negative_infonce `negative`). Off = the paper's setting (negatives from the batch only)."""
    batch_by_subset: bool = False
    """Every global batch from one subset (train/batching.GroupedEpochs), so in-batch and hard negatives are
    same-task candidates; off = batches mix the subsets at random."""

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8; got {self.image_size}")
        if any(v < 0 for v in self.caps.values()) or any(v < 0 for v in self.weights.values()):
            raise ConfigError("data.caps and data.weights must be >= 0")


@dataclass(frozen=True)
class Pair:
    query: str
    query_image: str | None
    target: str
    target_image: str | None
    subset: str
    row: int
    negative: str = ""
    negative_image: str | None = None

    @property
    def has_negative(self) -> bool:
        return bool(self.negative or self.negative_image)


@dataclass
class Stage2Data:
    pairs: list[Pair]
    pool: list[int]
    """Indices into `pairs` making one epoch (caps and weights applied)."""
    counts: dict[str, int]
    image_root: Path
    image_size: int

    def item(self, text: str, image: str | None, regime: str) -> Item:
        """One side of a pair as an `Item`: e5v strips MMEB's image placeholder (the image goes in the image slot,
        the rest is the item's text); mmeb keeps the raw text (the InputBuilder maps the placeholder)."""
        img = self.load(image) if image else None
        if regime == "e5v":
            text = " ".join(text.replace(MMEB_IMAGE_PLACEHOLDER, " ").split())
        else:
            text = text.strip()
        return Item(text=text or None, image=img)

    def load(self, rel: str):  # -> PIL.Image.Image
        from PIL import Image

        from uniretrieve.models.images import load_image

        im = load_image(self.image_root / rel)
        return im.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)


def _subset_files(root: Path, subsets: list[str] | None) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise Stage2DataError(
            f"{root} is not a folder; pass the MMEB-train folder (one sub-folder per subset)"
        )
    found = {p.name: sorted(p.glob("*.parquet")) for p in sorted(root.iterdir()) if p.is_dir()}
    found = {k: v for k, v in found.items() if v}
    if subsets is None:
        if not found:
            raise Stage2DataError(f"{root} has no <Subset>/*.parquet files (the TIGER-Lab/MMEB-train layout)")
        return found
    missing = [s for s in subsets if s not in found]
    if missing:
        raise Stage2DataError(f"{root}: no Parquet files for subset(s) {missing}; found {sorted(found)}")
    return {s: found[s] for s in subsets}


def load_stage2_data(cfg: Stage2DataConfig, *, seed: int = 0) -> Stage2Data:
    import pyarrow.parquet as pq

    root = Path(cfg.root)
    pairs: list[Pair] = []
    pool: list[int] = []
    counts: dict[str, int] = {}
    for s_idx, (subset, files) in enumerate(_subset_files(root, cfg.subsets).items()):
        start = len(pairs)
        for f in files:
            table = pq.read_table(f)
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise Stage2DataError(f"{f} lacks column(s) {missing}; MMEB-train files have {list(COLUMNS)}")
            cols = {c: table.column(c).to_pylist() for c in COLUMNS}
            none = [None] * table.num_rows
            neg = {
                c: table.column(c).to_pylist() if cfg.negatives and c in table.column_names else none
                for c in NEGATIVE_COLUMNS
            }
            for r in range(table.num_rows):
                q, qi, t, ti = (cols[c][r] for c in COLUMNS)
                if not (q or qi) or not (t or ti):
                    raise Stage2DataError(f"{f} row {r}: an empty query or target (no text and no image)")
                nt, ni = (neg[c][r] for c in NEGATIVE_COLUMNS)
                pairs.append(Pair(q or "", qi or None, t or "", ti or None, subset, r, nt or "", ni or None))
        rows = np.arange(start, len(pairs))
        rng = np.random.default_rng([seed, s_idx])
        rows = rng.permutation(rows)[: cfg.caps.get(subset, len(rows))]
        w = cfg.weights.get(subset, 1.0)
        whole, frac = int(w), w - int(w)
        chosen = [*np.tile(rows, whole), *rows[: round(frac * len(rows))]]
        pool += [int(i) for i in chosen]
        counts[subset] = len(chosen)
    if not pool:
        raise Stage2DataError(f"{root}: caps and weights leave no training pairs")
    image_root = Path(cfg.image_root) if cfg.image_root else root
    return Stage2Data(pairs, pool, counts, image_root, cfg.image_size)
