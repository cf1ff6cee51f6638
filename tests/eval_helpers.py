"""Writers of tiny benchmark copies in each public layout, for the eval tests (independent of the scene generator).

Every writer returns what the loader should read back, so tests compare against what was written.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import make_image
from uniretrieve.eval.metrics import SUGARCREPE_CATEGORIES


def png_bytes(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    buf = io.BytesIO()
    make_image(seed, size).save(buf, format="PNG")
    return buf.getvalue()


def write_e5v(
    root: Path, n_images: int = 3, captions: int = 6, column: str = "text", files: int = 1
) -> list[list[str]]:
    """`root/data/test-0000k-of-0000n.parquet` with HF Image structs and caption lists (more than 5 per image, so
    the first-5 rule is exercised). Returns the captions per image in order."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    caps = [[f"image {i} caption {k}" for k in range(captions)] for i in range(n_images)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    per = -(-n_images // files)
    for f in range(files):
        ids = range(f * per, min(n_images, (f + 1) * per))
        table = pa.table(
            {
                "image": pa.array(
                    [{"bytes": png_bytes(i), "path": f"{i}.png"} for i in ids], type=image_type
                ),
                column: pa.array([caps[i] for i in ids], type=pa.list_(pa.string())),
            }
        )
        pq.write_table(table, root / "data" / f"test-{f:05d}-of-{files:05d}.parquet")
    return caps


def write_sharegpt4v(root: Path, n: int = 4) -> list[tuple[str, str]]:
    """The captioner json (a top-level array) with images under root/coco/train2017 and root/sam/images."""
    entries, pairs = [], []
    for i in range(n):
        rel = f"coco/train2017/{i:012d}.jpg" if i % 2 == 0 else f"sam/images/sa_{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make_image(100 + i).save(root / rel)
        cap = f"A long caption {i}.\nIt has a second line {i}."
        entries.append(
            {
                "id": str(i),
                "image": rel,
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe."},
                    {"from": "gpt", "value": cap},
                ],
            }
        )
        pairs.append((rel, cap.replace("\n", " ")))
    (root / "share-captioner_coco_lcs_sam_1246k_1107.json").write_text(json.dumps(entries, indent=1))
    return pairs


def write_urban1k(root: Path, n: int = 3) -> list[tuple[str, str]]:
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "caption").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        make_image(200 + i).save(root / "image" / f"{i + 1}.jpg")
        cap = f"An urban scene number {i} with many details."
        (root / "caption" / f"{i + 1}.txt").write_text(cap + "\n")
        out.append((f"{i + 1}.jpg", cap + "\n"))  # the official loader keeps the line ending (readlines()[0])
    return out


def write_sugarcrepe(
    root: Path, per_category: int = 2, categories=SUGARCREPE_CATEGORIES, in_data: bool = True
) -> dict:
    """The seven json files under root/data (or root) and COCO-style images under root/val2017."""
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    jdir = root / "data" if in_data else root
    jdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for c_i, cat in enumerate(categories):
        d = {}
        for k in range(per_category):
            fn = f"{(c_i * 10 + k):012d}.jpg"
            if not (root / "val2017" / fn).exists():
                make_image(300 + c_i * 10 + k).save(root / "val2017" / fn)
            d[str(k)] = {
                "filename": fn,
                "caption": f"{cat} positive {k}",
                "negative_caption": f"{cat} negative {k}",
            }
        (jdir / f"{cat}.json").write_text(json.dumps(d))
        written[cat] = d
    return written


def write_mmeb(root: Path, name: str, rows: list[tuple[str, str, list[str], list[str]]]) -> None:
    """`root/NAME/test-00000-of-00001.parquet` with the four MMEB columns; images referenced in the rows are
    created under root/eval_images."""
    (root / name).mkdir(parents=True, exist_ok=True)
    for _, qi, _, tis in rows:
        for rel in (qi, *tis):
            if rel and not (root / "eval_images" / rel).exists():
                (root / "eval_images" / rel).parent.mkdir(parents=True, exist_ok=True)
                make_image(zlib.crc32(rel.encode()) % 1000).save(root / "eval_images" / rel)
    table = pa.table(
        {
            "qry_text": [r[0] for r in rows],
            "qry_img_path": [r[1] for r in rows],
            "tgt_text": [r[2] for r in rows],
            "tgt_img_path": [r[3] for r in rows],
        }
    )
    pq.write_table(table, root / name / "test-00000-of-00001.parquet")


def mmeb_classification_rows(
    name: str, n: int = 3, classes: int = 3
) -> list[tuple[str, str, list[str], list[str]]]:
    """Image query → class-name candidates (target first), as MMEB classification sets are laid out."""
    labels = [f"class {c}" for c in range(classes)]
    rows = []
    for i in range(n):
        target = labels[i % classes]
        cands = [target, *[lab for lab in labels if lab != target]]
        rows.append(
            (
                "<|image_1|> Represent the given image for classification",
                f"{name}/img_{i}.jpg",
                cands,
                [""] * len(cands),
            )
        )
    return rows


def mmeb_retrieval_rows(name: str, n: int = 3) -> list[tuple[str, str, list[str], list[str]]]:
    """Text query → image candidates (target first), sharing candidates across rows."""
    imgs = [f"{name}/cand_{j}.jpg" for j in range(n)]
    rows = []
    for i in range(n):
        cands = [imgs[i], *[x for x in imgs if x != imgs[i]]]
        rows.append(
            (
                f"Find me an everyday image that matches the given caption: caption {i}",
                "",
                ["<|image_1|>\nRepresent the given image."] * len(cands),
                cands,
            )
        )
    return rows
