"""LLaVA-Pretrain data (the public `blip_laion_cc_sbu_558k.json` layout) → (image path, request, caption) rows.

Layout (liuhaotian/LLaVA-Pretrain): a JSON array of
`{"id", "image": "relative/path.jpg", "conversations": [{"from": "human", "value": "<image>\\n…"},
{"from": "gpt", "value": CAPTION}]}`; image paths are relative to an image folder (`images/` beside the json, or
the json's folder). The scene generator writes the same layout (`llava-pretrain/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_JSON = "blip_laion_cc_sbu_558k.json"


class PretrainDataError(ValueError):
    """Unusable pretraining data; the message names the file and the entry."""


@dataclass(frozen=True)
class CaptionExample:
    image: Path | None
    """None for a text-only conversation (no "image" key, as in LLaVA's instruction data)."""
    request: str
    """The human turn without the image placeholder (e.g. "Describe the image.")."""
    caption: str


def find_json(data: str | Path) -> Path:
    p = Path(data)
    if p.is_dir():
        p = p / DEFAULT_JSON
    if not p.is_file():
        raise PretrainDataError(
            f"{p} not found: pass a LLaVA-Pretrain json or its folder (e.g. the `llava-pretrain/` folder that "
            "`uniretrieve scenes generate` writes)"
        )
    return p


def image_root(json_path: Path) -> Path:
    images = json_path.parent / "images"
    return images if images.is_dir() else json_path.parent


def read_llava_pretrain(data: str | Path, *, limit: int | None = None) -> list[CaptionExample]:
    """All entries (or the first `limit`), validated; a bad entry is an error naming the file and its index."""
    path = find_json(data)
    root = image_root(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PretrainDataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise PretrainDataError(f"{path} must hold a JSON array of conversations")
    out: list[CaptionExample] = []
    for i, e in enumerate(entries[:limit]):
        try:
            human, gpt = e["conversations"][0], e["conversations"][1]
            if human["from"] != "human" or gpt["from"] != "gpt":
                raise KeyError("conversations must be [human, gpt]")
            request = human["value"].replace("<image>", "").strip()
            image = root / e["image"] if e.get("image") else None
            out.append(CaptionExample(image, request, gpt["value"].strip()))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise PretrainDataError(f"{path} entry {i}: {exc!r}; expected the LLaVA-Pretrain layout") from exc
    if not out:
        raise PretrainDataError(f"{path} holds no entries")
    return out
