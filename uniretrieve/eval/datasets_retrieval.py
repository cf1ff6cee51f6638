"""Flickr30K and MS-COCO test sets as E5-V publishes them (docs/benchmarks.md#flickr30k-and-coco).

Layout: the Hugging Face datasets `royokong/flickr30k_test` and `royokong/coco_test` downloaded as files
(`data/test-00000-of-0000N.parquet`), one row per image with columns `image` (HF Image struct) and `text` (the list
of captions; `caption` is accepted too). As in UniME `retrieval_self.py`, an image keeps its first 5 captions, and
captions are numbered in image order, so caption t belongs to image t // 5 when every image has 5.
"""

from __future__ import annotations

from pathlib import Path

from uniretrieve.eval.parquet_rows import column_names, first_present, image_source, iter_rows, parquet_files
from uniretrieve.eval.records import MissingDataError, RetrievalSet, require
from uniretrieve.eval.sources import Source

CAPTIONS_PER_IMAGE = 5
HUB_IDS = {"flickr30k": "royokong/flickr30k_test", "coco": "royokong/coco_test"}


def download_hint(name: str, root: Path) -> str:
    return (
        f"Download the E5-V test set with `huggingface-cli download {HUB_IDS[name]} --repo-type dataset "
        f"--local-dir {root}` so that {root}/data/test-*.parquet exists, and pass --data {root}."
    )


def load_e5v_retrieval(
    root: str | Path, name: str, captions_per_image: int = CAPTIONS_PER_IMAGE
) -> RetrievalSet:
    """Read a Flickr30K or COCO E5-V test set (`name` in {"flickr30k", "coco"}) from `root`."""
    if name not in HUB_IDS:
        raise ValueError(f"unknown E5-V retrieval set {name!r}; expected one of {', '.join(HUB_IDS)}")
    root = Path(root)
    require(root, f"{name} data folder", download_hint(name, root))
    files = parquet_files(root) if root.is_dir() else [root]
    base = root if root.is_dir() else root.parent
    if not files:
        raise MissingDataError(f"no Parquet files under {root}\n{download_hint(name, root)}")
    names = column_names(files[0])
    image_col = first_present(names, ("image", "img"), files[0])
    text_col = first_present(names, ("text", "caption", "captions"), files[0])
    images: list[Source] = []
    texts: list[Source] = []
    owners: list[int] = []
    short: list[str] = []
    for origin, rec in iter_rows(files, (image_col, text_col)):
        caps = rec[text_col]
        if isinstance(caps, str):
            caps = [caps]
        if not caps:
            raise ValueError(f"{origin} has no captions")
        if len(caps) < captions_per_image:
            short.append(origin)
        img_id = len(images)
        images.append(image_source(rec[image_col], origin=origin, root=base))
        for k, cap in enumerate(caps[:captions_per_image]):
            texts.append(Source(text=str(cap), origin=f"{origin} caption {k}"))
            owners.append(img_id)
    info = {"files": [str(f) for f in files], "images": len(images), "captions": len(texts)}
    if short:
        info["images_with_fewer_captions"] = len(short)
    return RetrievalSet(name=name, images=images, texts=texts, text_to_image=owners, info=info)
