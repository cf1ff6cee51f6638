"""Writers for the public file layouts the generated corpus is published in (docs/benchmarks.md; exact layout in
the README section "Generated scenes"). Each writer takes ready-made records and an `ImageStore`, and writes one
self-contained folder that the loader for the real dataset reads unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uniretrieve.scenes.files import write_bytes, write_image, write_text
from uniretrieve.scenes.render import crop_object, encode_jpeg, render_scene
from uniretrieve.scenes.spec import Scene
from uniretrieve.scenes.tasks import ImageKey, TaskExample

SHAREGPT4V_JSON = "share-captioner_coco_lcs_sam_1246k_1107.json"
"""The Long-CLIP evaluation file name (Hugging Face Lin-Chen/ShareGPT4V)."""
LLAVA_PRETRAIN_JSON = "blip_laion_cc_sbu_558k.json"
"""The LLaVA-Pretrain file name (Hugging Face liuhaotian/LLaVA-Pretrain)."""
NLI_CSV = "nli_for_simcse.csv"
"""SimCSE's NLI triplets file, which E5-V and UniME stage 1 train on (docs/method.md#stage-1-data)."""
PARQUET_TEST = "test-00000-of-00001.parquet"
PARQUET_TRAIN = "original-00000-of-00001.parquet"
LONG_REQUEST = "<image>\nDescribe the image in detail."
SHORT_REQUEST = "<image>\nDescribe the image."
SUMMARY_IMAGE_REQUEST = "<image>\nSummary above image in one word:"
SUMMARY_TEXT_REQUEST = "{text}\nSummary above sentence in one word:"
"""E5-V's summary prompts (docs/method.md#prompt-regimes) as pretraining requests, answered with one object's
colour and shape."""


class ImageStore:
    """JPEG bytes of scenes and of their cell crops, rendered on first use and cached."""

    def __init__(self, scenes: Sequence[Scene]) -> None:
        self._scenes = {s.scene_id: s for s in scenes}
        self._cache: dict[ImageKey, bytes] = {}

    def jpeg(self, key: ImageKey) -> bytes:
        if key not in self._cache:
            scene_id, cell = key
            scene = self._scenes[scene_id]
            image = render_scene(scene)
            if cell is None:
                self._cache[key] = encode_jpeg(image)
            else:
                obj = next(o for o in scene.objects if o.cell == cell)
                self._cache[key] = encode_jpeg(crop_object(image, scene, obj))
        return self._cache[key]

    @staticmethod
    def filename(key: ImageKey) -> str:
        scene_id, cell = key
        return f"{scene_id}.jpg" if cell is None else f"{scene_id}_c{cell}.jpg"


def _parquet_bytes(columns: Mapping[str, Any], schema: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(dict(columns), schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=1024)
    return sink.getvalue().to_pybytes()


def _json(data: Any, indent: int | None = None) -> str:
    return json.dumps(data, ensure_ascii=False, indent=indent) + "\n"


def write_short(
    root: Path, scenes: Sequence[Scene], captions: Mapping[str, list[str]], images: ImageStore
) -> int:
    """E5-V Flickr30K/COCO test layout: data/test-00000-of-00001.parquet, columns image (HF Image struct) and text
    (list of captions). Returns the number of rows."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("text", pa.list_(pa.string())),
        ]
    )
    cols = {
        "image": [{"bytes": images.jpeg((s.scene_id, None)), "path": f"{s.scene_id}.jpg"} for s in scenes],
        "text": [captions[s.scene_id] for s in scenes],
    }
    write_bytes(root / "data" / PARQUET_TEST, _parquet_bytes(cols, schema))
    return len(scenes)


def write_sharegpt4v(
    root: Path, scenes: Sequence[Scene], captions: Mapping[str, str], images: ImageStore
) -> int:
    """Long-CLIP ShareGPT4V layout: the captioner json (an array of LLaVA conversations) and images under root."""
    entries = []
    for s in scenes:
        rel = f"scenes/{s.scene_id}.jpg"
        write_image(root / rel, images.jpeg((s.scene_id, None)))
        entries.append(
            {
                "id": s.scene_id,
                "image": rel,
                "conversations": [
                    {"from": "human", "value": LONG_REQUEST},
                    {"from": "gpt", "value": captions[s.scene_id]},
                ],
            }
        )
    write_text(root / SHAREGPT4V_JSON, _json(entries))
    return len(entries)


def write_urban1k(
    root: Path, scenes: Sequence[Scene], captions: Mapping[str, str], images: ImageStore
) -> int:
    """Urban1K layout: image/NAME.jpg and caption/NAME.txt (the caption on its first and only line)."""
    for s in scenes:
        write_image(root / "image" / f"{s.scene_id}.jpg", images.jpeg((s.scene_id, None)))
        write_text(root / "caption" / f"{s.scene_id}.txt", captions[s.scene_id] + "\n")
    return len(scenes)


def write_sugarcrepe(
    root: Path, items: Mapping[str, Sequence[tuple[str, str, str]]], images: ImageStore
) -> dict[str, int]:
    """SugarCrepe layout: CATEGORY.json = {"0": {"filename", "caption", "negative_caption"}, …} and the images in
    val2017/ (where the real files' COCO val2017 images live). `items[category]` = [(scene_id, pos, neg), …]."""
    counts = {}
    for category, rows in items.items():
        data = {}
        for k, (scene_id, pos, neg) in enumerate(rows):
            name = f"{scene_id}.jpg"
            write_image(root / "val2017" / name, images.jpeg((scene_id, None)))
            data[str(k)] = {"filename": name, "caption": pos, "negative_caption": neg}
        write_text(root / f"{category}.json", _json(data, indent=4))
        counts[category] = len(rows)
    return counts


def _path(key: ImageKey | None, prefix: str) -> str:
    return "" if key is None else f"{prefix}{ImageStore.filename(key)}"


def write_mmeb_eval(
    root: Path,
    rows: Mapping[str, Sequence[tuple[TaskExample, list[str], list[ImageKey | None]]]],
    meta_tasks: Mapping[str, str],
    images: ImageStore,
) -> dict[str, int]:
    """MMEB-eval layout: DATASET/test-00000-of-00001.parquet with qry_text, qry_img_path, tgt_text (list),
    tgt_img_path (list; first = target), images under eval_images/DATASET/, and datasets.json naming each dataset's
    meta-task (these datasets are not among MMEB's 36)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("qry_text", pa.string()),
            ("qry_img_path", pa.string()),
            ("tgt_text", pa.list_(pa.string())),
            ("tgt_img_path", pa.list_(pa.string())),
        ]
    )
    counts = {}
    for name, task_rows in rows.items():
        prefix = f"{name}/"
        cols: dict[str, list[Any]] = {"qry_text": [], "qry_img_path": [], "tgt_text": [], "tgt_img_path": []}
        used = {key for ex, _, keys in task_rows for key in (ex.qry_image, *keys) if key is not None}
        for key in sorted(used, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
            write_image(root / "eval_images" / _path(key, prefix), images.jpeg(key))
        for ex, texts, keys in task_rows:
            cols["qry_text"].append(ex.qry_text)
            cols["qry_img_path"].append(_path(ex.qry_image, prefix))
            cols["tgt_text"].append(list(texts))
            cols["tgt_img_path"].append([_path(k, prefix) for k in keys])
        write_bytes(root / name / PARQUET_TEST, _parquet_bytes(cols, schema))
        counts[name] = len(task_rows)
    write_text(
        root / "datasets.json", _json([{"name": n, "meta_task": meta_tasks[n]} for n in rows], indent=2)
    )
    return counts


def write_mmeb_train(
    root: Path, rows: Mapping[str, Sequence[TaskExample]], images: ImageStore
) -> dict[str, int]:
    """MMEB-train layout: SUBSET/original-00000-of-00001.parquet with qry, qry_image_path, pos_text, pos_image_path,
    neg_text, neg_image_path; image paths relative to root ("images/Scene/Train/…" for whole scenes, shared by the
    subsets; "images/Scene_Crops/Train/…" for cell crops)."""
    import pyarrow as pa

    names = ("qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path")
    schema = pa.schema([(n, pa.string()) for n in names])

    def path(key: ImageKey | None) -> str:
        if key is None:
            return ""
        folder = "Scene" if key[1] is None else "Scene_Crops"
        rel = f"images/{folder}/Train/{ImageStore.filename(key)}"
        if rel not in written:
            write_image(root / rel, images.jpeg(key))
            written.add(rel)
        return rel

    written: set[str] = set()
    counts = {}
    for name, examples in rows.items():
        cols: dict[str, list[str]] = {n: [] for n in names}
        for ex in examples:
            cols["qry"].append(ex.qry_text)
            cols["qry_image_path"].append(path(ex.qry_image))
            cols["pos_text"].append(ex.pos_text)
            cols["pos_image_path"].append(path(ex.pos_image))
            cols["neg_text"].append(ex.neg_text)
            cols["neg_image_path"].append("")
        write_bytes(root / name / PARQUET_TRAIN, _parquet_bytes(cols, schema))
        counts[name] = len(examples)
    return counts


def write_nli(root: Path, triplets: Sequence[tuple[str, str, str]]) -> int:
    """SimCSE NLI layout: nli_for_simcse.csv with header sent0,sent1,hard_neg."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("sent0", "sent1", "hard_neg"))
    w.writerows(triplets)
    write_text(root / NLI_CSV, buf.getvalue())
    return len(triplets)


def write_llava_pretrain(
    root: Path, entries: Sequence[tuple[str, str | None, str, str]], images: ImageStore
) -> int:
    """LLaVA-Pretrain layout: blip_laion_cc_sbu_558k.json (id, image, conversations) and images/ beside it.
    `entries` = [(entry id, scene_id or None, human turn, answer), …]; an entry without a scene is text-only and has
    no "image" key (as the text-only conversations of LLaVA's instruction data)."""
    out = []
    for entry_id, scene_id, request, answer in entries:
        row: dict[str, Any] = {"id": entry_id}
        if scene_id is not None:
            row["image"] = f"{scene_id}.jpg"
            write_image(root / "images" / row["image"], images.jpeg((scene_id, None)))
        row["conversations"] = [{"from": "human", "value": request}, {"from": "gpt", "value": answer}]
        out.append(row)
    write_text(root / LLAVA_PRETRAIN_JSON, _json(out))
    return len(out)


def write_scenes(path: Path, scenes: Sequence[Scene]) -> int:
    write_text(path, "".join(json.dumps(s.to_dict(), sort_keys=True) + "\n" for s in scenes))
    return len(scenes)
