"""MMEB-eval (v1, 36 image datasets; docs/benchmarks.md#mmeb) from a local copy of `TIGER-Lab/MMEB-eval`.

Layout: one folder per dataset (`ImageNet-1K/test-00000-of-00001.parquet`, the hub's configs) with the columns
`qry_text`, `qry_img_path`, `tgt_text` (list), `tgt_img_path` (list), and `images.zip` unpacked into an image
root (VLM2Vec: `unzip images.zip -d eval_images/`, then `--image_dir eval_images/`). An empty image path means "no
image". The first candidate of each row is the target.

As in VLM2Vec v1 `EvalDataset.get_paired_data`, each side is embedded once per unique (text, image path) pair;
here the pairs keep first-seen order, so the cache fingerprint is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uniretrieve.eval.datasets_longcap import pick_image_root
from uniretrieve.eval.mmeb_tasks import MMEBDataset
from uniretrieve.eval.parquet_rows import iter_rows, parquet_files
from uniretrieve.eval.records import MissingDataError, MMEBSet
from uniretrieve.eval.sources import Source, dedupe

COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")
HINT = (
    "Download the Hugging Face dataset TIGER-Lab/MMEB-eval (`huggingface-cli download TIGER-Lab/MMEB-eval "
    "--repo-type dataset --local-dir {root}`) so that {root}/<Dataset>/test-*.parquet exists, and unzip its "
    "images.zip into {root}/eval_images (or pass --image-root)."
)


def dataset_files(root: Path, name: str) -> list[Path]:
    """Parquet files of one dataset: `root/NAME/…parquet` or `root/NAME.parquet`."""
    folder = root / name
    if folder.is_dir():
        files = parquet_files(folder)
        if files:
            return files
    single = root / f"{name}.parquet"
    if single.is_file():
        return [single]
    raise MissingDataError(
        f"MMEB dataset {name} not found: expected {folder}/test-*.parquet\n{HINT.format(root=root)}"
    )


def _source(text: str, img: str, base: Path, origin: str) -> Source:
    # VLM2Vec keys by the raw (text, img_path) pair; "" is "absent" for both.
    return Source(text=text or None, image_path=str(base / img) if img else None, origin=origin)


def read_rows(files: Sequence[Path]) -> list[tuple[str, tuple[str, str], list[tuple[str, str]]]]:
    """(origin, (qry_text, qry_img_path), [(tgt_text, tgt_img_path), …]) per row, checked."""
    rows = []
    for origin, rec in iter_rows(files, COLUMNS):
        tt, ti = rec["tgt_text"], rec["tgt_img_path"]
        # VLM2Vec also accepts one text shared by a list of images (and the reverse).
        if isinstance(tt, str):
            tt = [tt] * (len(ti) if isinstance(ti, list) else 1)
        if isinstance(ti, str):
            ti = [ti] * len(tt)
        if not tt or len(tt) != len(ti):
            raise ValueError(
                f"{origin}: tgt_text ({len(tt)}) and tgt_img_path ({len(ti)}) must be equal non-empty lists"
            )
        cands = [(str(t or ""), str(i or "")) for t, i in zip(tt, ti, strict=True)]
        rows.append((origin, (str(rec["qry_text"] or ""), str(rec["qry_img_path"] or "")), cands))
    return rows


def _first_image(rows: list[tuple[str, tuple[str, str], list[tuple[str, str]]]]) -> str | None:
    for _, (_, qi), cands in rows:
        for img in (qi, *(i for _, i in cands)):
            if img:
                return img
    return None


def load_mmeb_dataset(root: str | Path, ds: MMEBDataset, image_root: str | Path | None = None) -> MMEBSet:
    """One MMEB dataset with both sides deduplicated (`sources.dedupe`); every image must exist."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"MMEB-eval folder not found: {root}\n{HINT.format(root=root)}")
    files = dataset_files(root, ds.name)
    rows = read_rows(files)
    if not rows:
        raise ValueError(f"{files[0]} holds no rows")
    first_img = _first_image(rows)
    base = root
    if first_img is not None:
        cands = (
            [Path(image_root)]
            if image_root is not None
            else [root / "eval_images", root / "images", root / "eval_images" / "images", root]
        )
        found = pick_image_root(cands, first_img)
        if found is None:
            raise MissingDataError(
                f"MMEB image {first_img} not found under {', '.join(str(c) for c in cands)}\n{HINT.format(root=root)}"
            )
        base = found
    queries: list[Source] = []
    candidates: list[Source] = []
    cand_counts: list[int] = []
    for origin, (qt, qi), cands_ in rows:
        if not qt and not qi:
            raise ValueError(f"{origin}: the query has neither text nor image")
        queries.append(_source(qt, qi, base, f"{origin} query"))
        for k, (t, i) in enumerate(cands_):
            if not t and not i:
                raise ValueError(f"{origin}: candidate {k} has neither text nor image")
            candidates.append(_source(t, i, base, f"{origin} candidate {k}"))
        cand_counts.append(len(cands_))
    uq, q_ids = dedupe(queries)
    uc, c_ids = dedupe(candidates)
    missing = [s for s in (*uq, *uc) if s.image_path is not None and not Path(s.image_path).is_file()]
    if missing:
        raise MissingDataError(
            f"{len(missing)} image(s) of MMEB {ds.name} missing, e.g. {missing[0].image_path} ({missing[0].origin})\n"
            + HINT.format(root=root)
        )
    bounds = np.cumsum([0, *cand_counts])
    c_arr = np.asarray(c_ids, dtype=np.int64)
    cand_index = [c_arr[bounds[r] : bounds[r + 1]] for r in range(len(rows))]
    return MMEBSet(
        name=ds.name,
        queries=uq,
        candidates=uc,
        query_index=np.asarray(q_ids, dtype=np.int64),
        candidate_index=cand_index,
        n_candidate_refs=len(candidates),
    )
