"""Small MMEB-train-format data and a small config for the stage-2 tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def write_mmeb_train(root: Path, rows: int = 8) -> Path:
    """Two subsets: image→text (`Cls`: image query, label target; even rows carry a `neg_text`, a wrong label) and
    text→image (`T2I`, without negative columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i in range(rows):
        c = names[i % 4]
        Image.new("RGB", (20 + i, 24), COLOURS[c]).save(img_dir / f"im{i}.png")
    cls = {
        "qry": ["<|image_1|>\nRepresent the given image for classification\n"] * rows,
        "qry_image_path": [f"images/im{i}.png" for i in range(rows)],
        "pos_text": [f"{names[i % 4]} picture {i}" for i in range(rows)],
        "pos_image_path": [""] * rows,
        "neg_text": [f"{names[(i + 1) % 4]} picture {i}" if i % 2 == 0 else "" for i in range(rows)],
        "neg_image_path": [""] * rows,
    }
    t2i = {
        "qry": [f"Find an image of a {names[i % 4]} picture number {i}" for i in range(rows)],
        "qry_image_path": [""] * rows,
        "pos_text": ["<|image_1|>\nRepresent the given image.\n"] * rows,
        "pos_image_path": [f"images/im{i}.png" for i in range(rows)],
    }
    for name, cols in (("Cls", cls), ("T2I", t2i)):
        (root / name).mkdir(exist_ok=True)
        pq.write_table(pa.table(cols), root / name / "original-00000-of-00001.parquet")
    return root


def stage2_config(model_dir: Path, data: Path, out: Path, **overrides: Any) -> Any:
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config

    values: dict[str, Any] = {
        "model": str(model_dir),
        "output_dir": str(out),
        "data.root": str(data),
        "batch_size": 8,
        "chunk_size": 3,
        "max_steps": 3,
        "log_every": 1,
        "device": "cpu",
        "precision": "fp32",  # exact comparisons (ranks, chunks, resume); the preset's bf16 autocast rounds
        "data.image_size": 32,
        "loss.k": 3,
        "checkpoint.every_steps": 0,
        "checkpoint.merge": False,
        **overrides,
    }
    return load_config(Stage2Config, "stage2-tiny", [], **values)
