"""Long-caption retrieval sets in the Long-CLIP layouts (docs/benchmarks.md#long-captions): ShareGPT4V-1K and
Urban1K.

Both are 1:1 (text i describes image i), scored with R@k in both directions over 1K × 1K.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uniretrieve.eval.records import MissingDataError, RetrievalSet, require
from uniretrieve.eval.sources import Source

SHAREGPT4V_JSON = "share-captioner_coco_lcs_sam_1246k_1107.json"
SHAREGPT4V_COUNT = 1000
"""Long-CLIP evaluates on the first 1,000 entries and trains on the rest (`json.load(...)[:1000]`)."""

SHAREGPT4V_HINT = (
    f"Download {SHAREGPT4V_JSON} from the Hugging Face dataset Lin-Chen/ShareGPT4V into {{root}}, and the images it "
    "names (coco/…, sam/…, llava/…; e.g. the modelscope dataset hjh0119/sharegpt4v-images) under one image root "
    "(--image-root, default {root})."
)
URBAN1K_HINT = (
    "Download the Hugging Face dataset BeichenZhang/Urban1k and unpack it so that {root}/image/*.jpg and "
    "{root}/caption/*.txt exist (1,000 each), then pass --data {root}."
)


def first_array_items(path: Path, n: int, chunk_chars: int = 1 << 20) -> list[Any]:
    """The first `n` elements of a JSON file holding one top-level array, read incrementally.

    The ShareGPT4V captioner file is about 1.2M entries; `json.load` on all of it only to keep 1,000 costs
    gigabytes, so elements are decoded one at a time and reading stops after the n-th.
    """
    decoder = json.JSONDecoder()
    out: list[Any] = []
    with open(path, encoding="utf-8-sig") as f:
        buf = f.read(chunk_chars).lstrip()
        if not buf.startswith("["):
            raise ValueError(f"{path} does not hold a JSON array")
        pos, eof = 1, False
        while len(out) < n:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                break
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if eof:
                    raise ValueError(f"{path}: invalid JSON after element {len(out)}: {exc}") from exc
                more = f.read(chunk_chars)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                continue
            if end == len(buf) and not eof:  # a number or literal may continue in the next chunk
                more = f.read(chunk_chars)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                continue
            out.append(obj)
            pos = end
    return out


def pick_image_root(candidates: Sequence[Path], first_image: str) -> Path | None:
    """The first candidate root under which `first_image` exists (the official code joins root + relative path)."""
    for c in candidates:
        if (c / first_image).is_file():
            return c
    return None


def load_sharegpt4v(
    root: str | Path, image_root: str | Path | None = None, count: int = SHAREGPT4V_COUNT
) -> RetrievalSet:
    """ShareGPT4V-1K: the first `count` captioner entries; caption = conversations[1].value with newlines → spaces.

    `root` is the folder holding the json (or the json itself). Images: `image_root` if given, else the first of
    root, root/data, root/images under which the first entry's image exists.
    """
    root = Path(root)
    json_path = root if root.is_file() else root / SHAREGPT4V_JSON
    folder = json_path.parent
    require(json_path, "ShareGPT4V captioner json", SHAREGPT4V_HINT.format(root=folder))
    entries = first_array_items(json_path, count)
    if not entries:
        raise ValueError(f"{json_path} holds no entries")
    try:
        rel = [str(e["image"]) for e in entries]
        captions = [str(e["conversations"][1]["value"]).replace("\n", " ") for e in entries]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{json_path}: an entry lacks 'image' or conversations[1].value ({exc!r})") from exc
    cands = [Path(image_root)] if image_root is not None else [folder, folder / "data", folder / "images"]
    base = pick_image_root(cands, rel[0])
    if base is None:
        raise MissingDataError(
            f"ShareGPT4V image {rel[0]} not found under {', '.join(str(c) for c in cands)}\n"
            + SHAREGPT4V_HINT.format(root=folder)
        )
    images = [
        Source(image_path=str(base / r), origin=f"{json_path.name} entry {i}") for i, r in enumerate(rel)
    ]
    missing = [s.image_path for s in images if not Path(str(s.image_path)).is_file()]
    if missing:
        raise MissingDataError(
            f"{len(missing)} ShareGPT4V image(s) missing under {base}, e.g. {missing[0]}\n"
            + SHAREGPT4V_HINT.format(root=folder)
        )
    texts = [Source(text=c, origin=f"{json_path.name} entry {i}") for i, c in enumerate(captions)]
    n = len(entries)
    info: dict[str, object] = {"json": str(json_path), "image_root": str(base), "pairs": n}
    if n < count:  # a small or generated file: score what is there, and say it is not the published protocol
        info["warning"] = f"{json_path.name} holds {n} entries; ShareGPT4V-1K uses the first {count}"
    return RetrievalSet("sharegpt4v", images, texts, list(range(n)), info=info)


def load_urban1k(root: str | Path) -> RetrievalSet:
    """Urban1K: for each `caption/NAME.txt` (name order) the image `image/NAME.jpg`; caption = the first line.

    Long-CLIP iterates `os.listdir` (arbitrary order); the order does not change 1:1 recall. The caption keeps
    its line ending, as Long-CLIP's `f.readlines()[0]` does: the official prompt holds it.
    """
    root = Path(root)
    if not (root / "caption").is_dir() and (root / "Urban1k" / "caption").is_dir():
        root = root / "Urban1k"
    hint = URBAN1K_HINT.format(root=root)
    require(root / "caption", "Urban1K caption folder", hint)
    require(root / "image", "Urban1K image folder", hint)
    caption_files = sorted(p for p in (root / "caption").iterdir() if p.suffix == ".txt")
    if not caption_files:
        raise MissingDataError(f"no .txt files in {root / 'caption'}\n{hint}")
    images, texts = [], []
    for cf in caption_files:
        img = root / "image" / (cf.stem + ".jpg")
        if not img.is_file():
            raise MissingDataError(f"{cf} has no image {img}\n{hint}")
        with cf.open(encoding="utf-8") as f:
            first = (
                f.readline()
            )  # == readlines()[0]: "\n"-terminated unless it is the file's only, unended line
        if not first.strip():
            raise ValueError(f"{cf} is empty; every Urban1K caption file holds one caption")
        images.append(Source(image_path=str(img), origin=str(img)))
        texts.append(Source(text=first, origin=str(cf)))
    info = {"root": str(root), "pairs": len(texts)}
    return RetrievalSet("urban1k", images, texts, list(range(len(texts))), info=info)
