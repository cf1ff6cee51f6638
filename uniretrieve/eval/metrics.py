"""Benchmark metrics, pure numpy, computed as the official evaluation code computes them.

- Recall@k (Flickr30K, COCO, ShareGPT4V, Urban1K): E5-V / CLIP-benchmark `recall_at_k` as used by UniME
  `self_evaluate/retrieval_self.py` (docs/benchmarks.md#recall-at-k): per query, (#positives in the top k) /
  (#positives), then `> 0`, then the mean. A query is a hit when *any* of its positives is among the top k.
  Text→image ("image_retrieval_recall") has one positive per text; image→text ("text_retrieval_recall") has all
  captions of the image as positives.
- SugarCrepe accuracy (docs/benchmarks.md#sugarcrepe): mean over items of [cos(img, pos) > cos(img, neg)], strictly
  greater.
- MMEB precision@1 (docs/benchmarks.md#mmeb, VLM2Vec v1 `eval.py`): cosine against each row's candidates, pred =
  argmax, correct when pred == 0 (the first candidate is the target).

Ties. Recall@k breaks score ties by the lower candidate index (a stable descending sort); `torch.topk` in the
official code leaves the order of equal scores unspecified, so the two can differ only on exactly equal scores.
MMEB argmax returns the first maximal index, as `np.argmax` does in VLM2Vec, so a tie with the target counts as
correct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from uniretrieve.eval.mmeb_tasks import META_TASKS, MMEB_DATASETS, MMEBDataset

RECALL_KS: tuple[int, ...] = (1, 5, 10)

SUGARCREPE_CATEGORIES: tuple[str, ...] = (
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
    "add_obj",
    "add_att",
)
SUGARCREPE_GROUPS: dict[str, tuple[str, ...]] = {
    "Replace": ("replace_obj", "replace_att", "replace_rel"),
    "Swap": ("swap_obj", "swap_att"),
    "Add": ("add_obj", "add_att"),
}


def _check_finite(name: str, x: np.ndarray) -> None:
    # The official code asserts there is no NaN in the embeddings; a NaN would silently count as a miss here.
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=-1).sum()) if x.ndim > 1 else int((~np.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} row(s) with NaN or inf values; re-encode them")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


# --- recall@k ---------------------------------------------------------------------------------------------------


def sorted_positions(scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Where column `cols[r]` lands in row r of `scores` sorted by descending score, ties by lower index.

    scores [n, m], cols [n] ints → [n] 0-based positions. Equals the index of cols[r] in
    `np.argsort(-scores[r], kind="stable")` without sorting the row.
    """
    rows = np.arange(scores.shape[0])
    s = scores[rows, cols][:, None]
    before = np.arange(scores.shape[1])[None, :] < cols[:, None]
    return (scores > s).sum(axis=1) + ((scores == s) & before).sum(axis=1)


def best_positive_position(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Sorted position of each row's best-ranked positive.

    scores [n, m]; positives [n, p] int column ids padded with -1 (every row needs at least one) → [n] ints.
    """
    if positives.ndim != 2 or positives.shape[0] != scores.shape[0]:
        raise ValueError(f"positives must be [n_queries, p]; got {positives.shape} for scores {scores.shape}")
    valid = positives >= 0
    if not valid.any(axis=1).all():
        raise ValueError(f"{int((~valid.any(axis=1)).sum())} quer(ies) have no positive; recall is undefined")
    best = np.full(scores.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    for j in range(positives.shape[1]):
        ok = valid[:, j]
        if not ok.any():
            continue
        pos = sorted_positions(scores[ok], positives[ok, j])
        best[ok] = np.minimum(best[ok], pos)
    return best


def recall_from_positions(positions: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """Fraction of queries whose best positive sits in the top k, for each k."""
    return {int(k): float((positions < k).mean()) for k in ks}


def recall_at_k_dense(scores: np.ndarray, positive_mask: np.ndarray, k: int) -> float:
    """The E5-V/CLIP-benchmark formula on a full score matrix and a boolean positive mask (the slow, obvious form).

    Kept as the readable reference: the benchmark path uses `retrieval_recalls`, which never materialises the
    mask and processes queries in chunks.
    """
    if scores.shape != positive_mask.shape:
        raise ValueError(f"scores {scores.shape} and positive_mask {positive_mask.shape} differ in shape")
    n_pos = positive_mask.sum(axis=1)
    if (n_pos == 0).any():
        raise ValueError(f"{int((n_pos == 0).sum())} quer(ies) have no positive; recall is undefined")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    n_true = np.take_along_axis(positive_mask, top, axis=1).sum(axis=1)
    return float(((n_true / n_pos) > 0).mean())


def _pad_groups(groups: Sequence[Sequence[int]]) -> np.ndarray:
    width = max((len(g) for g in groups), default=0)
    out = np.full((len(groups), max(width, 1)), -1, dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = g
    return out


def retrieval_recalls(
    text_emb: np.ndarray,
    image_emb: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] = RECALL_KS,
    chunk: int = 512,
) -> dict[str, dict[int, float]]:
    """Recall@k in both directions for captioned images.

    text_emb [T, D] and image_emb [I, D], L2-normalised (scores are dot products, as in the official code);
    text_to_image [T] ints: the image each text describes. Returns {"t2i": {k: r}, "i2t": {k: r}} with r in [0, 1];
    "t2i" is the official `image_retrieval_recall@k`, "i2t" is `text_retrieval_recall@k`.
    """
    text_emb = np.asarray(text_emb, dtype=np.float32)
    image_emb = np.asarray(image_emb, dtype=np.float32)
    text_to_image = np.asarray(text_to_image, dtype=np.int64)
    _check_finite("text embeddings", text_emb)
    _check_finite("image embeddings", image_emb)
    n_img = image_emb.shape[0]
    if text_to_image.shape != (text_emb.shape[0],):
        raise ValueError(f"text_to_image has shape {text_to_image.shape}; expected ({text_emb.shape[0]},)")
    if text_to_image.size and (text_to_image.min() < 0 or text_to_image.max() >= n_img):
        raise ValueError(f"text_to_image refers to images outside 0..{n_img - 1}")
    captions: list[list[int]] = [[] for _ in range(n_img)]
    for t, i in enumerate(text_to_image.tolist()):
        captions[i].append(t)
    image_positives = _pad_groups(captions)

    t2i = np.empty(text_emb.shape[0], dtype=np.int64)
    for s in range(0, text_emb.shape[0], chunk):
        scores = text_emb[s : s + chunk] @ image_emb.T
        t2i[s : s + chunk] = sorted_positions(scores, text_to_image[s : s + chunk])
    i2t = np.empty(n_img, dtype=np.int64)
    for s in range(0, n_img, chunk):
        scores = image_emb[s : s + chunk] @ text_emb.T
        i2t[s : s + chunk] = best_positive_position(scores, image_positives[s : s + chunk])
    return {"t2i": recall_from_positions(t2i, ks), "i2t": recall_from_positions(i2t, ks)}


# --- SugarCrepe ---------------------------------------------------------------------------------------------------


def sugarcrepe_accuracy(image_emb: np.ndarray, pos_emb: np.ndarray, neg_emb: np.ndarray) -> float:
    """Mean of [cos(image, positive caption) > cos(image, negative caption)] over row-aligned items."""
    if not (image_emb.shape == pos_emb.shape == neg_emb.shape):
        raise ValueError(
            f"row-aligned embeddings expected; got {image_emb.shape}, {pos_emb.shape}, {neg_emb.shape}"
        )
    if image_emb.shape[0] == 0:
        raise ValueError("no SugarCrepe items to score")
    for name, x in (("image", image_emb), ("positive caption", pos_emb), ("negative caption", neg_emb)):
        _check_finite(f"{name} embeddings", x)
    img, pos, neg = l2_normalize(image_emb), l2_normalize(pos_emb), l2_normalize(neg_emb)
    return float(((img * pos).sum(axis=1) > (img * neg).sum(axis=1)).mean())


def sugarcrepe_groups(per_category: Mapping[str, tuple[float, int]]) -> dict[str, dict[str, float | int]]:
    """Replace / Swap / Add scores from per-category (accuracy, item count).

    How UniME Table 2 aggregates the categories is UNCONFIRMED (docs/benchmarks.md#sugarcrepe). "mean" is the
    unweighted mean of the categories in the group (our default, the usual SugarCrepe reporting); "weighted" is
    item-count weighted. A group is scored from the categories present; "n_categories" says how many that was.
    """
    out: dict[str, dict[str, float | int]] = {}
    for group, cats in SUGARCREPE_GROUPS.items():
        present = [c for c in cats if c in per_category]
        if not present:
            continue
        accs = np.array([per_category[c][0] for c in present], dtype=np.float64)
        counts = np.array([per_category[c][1] for c in present], dtype=np.float64)
        out[group] = {
            "mean": float(accs.mean()),
            "weighted": float((accs * counts).sum() / counts.sum()),
            "n_categories": len(present),
            "n_items": int(counts.sum()),
        }
    return out


# --- MMEB ---------------------------------------------------------------------------------------------------------


def mmeb_predictions(
    query_emb: np.ndarray,
    cand_emb: np.ndarray,
    query_index: np.ndarray,
    candidate_index: Sequence[np.ndarray],
) -> np.ndarray:
    """Per row: argmax over the row's candidates of cos(query, candidate), as an index into the row's list.

    query_emb [Q, D] and cand_emb [C, D] hold the deduplicated sides; row r's query is query_emb[query_index[r]]
    and its candidates are cand_emb[candidate_index[r]] (target first). Ties go to the first index (np.argmax).
    """
    if len(query_index) != len(candidate_index):
        raise ValueError(f"{len(query_index)} query ids but {len(candidate_index)} candidate lists")
    _check_finite("query embeddings", query_emb)
    _check_finite("candidate embeddings", cand_emb)
    q = l2_normalize(query_emb)
    c = l2_normalize(cand_emb)
    preds = np.empty(len(query_index), dtype=np.int64)
    for r, (qi, cands) in enumerate(zip(query_index, candidate_index, strict=True)):
        if len(cands) == 0:
            raise ValueError(f"row {r} has no candidates")
        preds[r] = int(np.argmax(c[cands] @ q[qi]))
    return preds


def mmeb_precision_at_1(
    query_emb: np.ndarray,
    cand_emb: np.ndarray,
    query_index: np.ndarray,
    candidate_index: Sequence[np.ndarray],
) -> float:
    """Fraction of rows whose argmax is the first candidate (the target)."""
    preds = mmeb_predictions(query_emb, cand_emb, query_index, candidate_index)
    return float((preds == 0).mean())


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def mmeb_aggregate(
    per_dataset: Mapping[str, float], table: Sequence[MMEBDataset] = MMEB_DATASETS
) -> dict[str, object]:
    """Meta-task, IND, OOD and overall scores from per-dataset precision@1.

    "overall" is the mean over the datasets given (over all 36 it is the official MMEB Overall); "meta_task_mean"
    is the unweighted mean of the four meta-task scores, which is what UniME Table 1 printed as "Overall" for most
    rows (docs/benchmarks.md#mmeb-overall). Scores of datasets outside the table are rejected.
    """
    by_name = {d.name: d for d in table}
    unknown = [n for n in per_dataset if n not in by_name]
    if unknown:
        raise ValueError(f"not MMEB datasets: {', '.join(unknown)}")
    rows = [(by_name[n], float(v)) for n, v in per_dataset.items()]
    meta = {m: _mean([v for d, v in rows if d.meta_task == m]) for m in META_TASKS}
    present_meta = [v for v in meta.values() if v is not None]
    return {
        "meta_tasks": {m: v for m, v in meta.items() if v is not None},
        "IND": _mean([v for d, v in rows if not d.ood]),
        "OOD": _mean([v for d, v in rows if d.ood]),
        "overall": _mean([v for _, v in rows]),
        "meta_task_mean": _mean(present_meta),
        "n_datasets": len(rows),
        "complete": len(rows) == len(table),
    }
