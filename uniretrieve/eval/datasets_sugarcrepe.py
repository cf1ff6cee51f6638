"""SugarCrepe (docs/benchmarks.md#sugarcrepe): seven json files from RAIVNLab/sugar-crepe `data/` plus COCO
val2017 images.

Each file is a dict keyed "0", "1", … of `{"filename": "000000xxxxxx.jpg", "caption": positive,
"negative_caption": negative}`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from uniretrieve.eval.datasets_longcap import pick_image_root
from uniretrieve.eval.metrics import SUGARCREPE_CATEGORIES
from uniretrieve.eval.records import MissingDataError, SugarCrepeSet
from uniretrieve.eval.sources import Source

HINT = (
    "Put the seven SugarCrepe files ({files}) from github.com/RAIVNLab/sugar-crepe (folder data/) into {root} or "
    "{root}/data, and the COCO val2017 images (http://images.cocodataset.org/zips/val2017.zip) in {root}/val2017 "
    "or {root}/data/coco/images/val2017 (or pass --image-root)."
)


def resolve_categories(subsets: Sequence[str] | None) -> list[str]:
    """Requested categories (None → all seven), checked, in the canonical order."""
    if not subsets:
        return list(SUGARCREPE_CATEGORIES)
    unknown = [s for s in subsets if s not in SUGARCREPE_CATEGORIES]
    if unknown:
        raise ValueError(
            f"unknown SugarCrepe categor(ies) {', '.join(unknown)}; choose from {', '.join(SUGARCREPE_CATEGORIES)}"
        )
    return [c for c in SUGARCREPE_CATEGORIES if c in subsets]


def _hint(root: Path) -> str:
    return HINT.format(files=", ".join(f"{c}.json" for c in SUGARCREPE_CATEGORIES), root=root)


def category_file(root: Path, category: str) -> Path:
    for cand in (root / f"{category}.json", root / "data" / f"{category}.json"):
        if cand.is_file():
            return cand
    raise MissingDataError(
        f"SugarCrepe file {category}.json not found in {root} or {root / 'data'}\n{_hint(root)}"
    )


def load_sugarcrepe(
    root: str | Path, subsets: Sequence[str] | None = None, image_root: str | Path | None = None
) -> list[SugarCrepeSet]:
    """One `SugarCrepeSet` per requested category; every image must exist (named when not)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"SugarCrepe folder not found: {root}\n{_hint(root)}")
    cats = resolve_categories(subsets)
    raw: dict[str, tuple[Path, list[tuple[str, dict]]]] = {}
    for cat in cats:
        path = category_file(root, cat)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} must be a JSON object keyed '0', '1', …")
        if not data:  # a generated copy may have no item of a category; it is left out of the scores
            continue
        items = sorted(data.items(), key=lambda kv: (0, int(kv[0]), "") if kv[0].isdigit() else (1, 0, kv[0]))
        raw[cat] = (path, items)
    if not raw:
        raise ValueError(f"every requested SugarCrepe file under {root} is empty")
    first = next(iter(raw.values()))[1][0][1].get("filename", "")
    cands = (
        [Path(image_root)]
        if image_root is not None
        else [
            root / "val2017",
            root / "coco" / "val2017",
            # the SugarCrepe repository's README layout, with --data at the clone or at its data/ folder
            root / "data" / "coco" / "images" / "val2017",
            root / "coco" / "images" / "val2017",
            root / "images" / "val2017",
            root / "images",
            root,
        ]
    )
    base = pick_image_root(cands, first)
    if base is None:
        raise MissingDataError(
            f"COCO val2017 image {first} not found under {', '.join(str(c) for c in cands)}\n{_hint(root)}"
        )
    out = []
    for cat, (path, items) in raw.items():
        images, pos, neg = [], [], []
        for key, rec in items:
            origin = f"{path.name} item {key}"
            try:
                fn, p, n = rec["filename"], rec["caption"], rec["negative_caption"]
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{origin} lacks filename/caption/negative_caption ({exc!r})") from exc
            img = base / fn
            if not img.is_file():
                raise MissingDataError(f"{origin}: image {img} not found\n{_hint(root)}")
            images.append(Source(image_path=str(img), origin=origin))
            pos.append(Source(text=str(p), origin=f"{origin} caption"))
            neg.append(Source(text=str(n), origin=f"{origin} negative_caption"))
        out.append(SugarCrepeSet(cat, images, pos, neg))
    return out
