"""Exact inner-product top-k over vectors that arrive in blocks, and tie-aware recall against it.

This is the ground truth every ANN index is measured against, so it is the slow obvious version: a float32 matmul per
block and a running top-k merge. Ties are broken by the smaller internal id, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TIE_EPS = 1e-5  # scores of unit vectors closer than this count as ties (float32 matmul order noise is ~1e-7)


def topk_rows(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `scores` [q, m] (with matching `ids`), the k best by (score desc, id asc); pads with -1 / -inf."""
    q, m = scores.shape
    if m > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        ids = np.take_along_axis(ids, part, axis=1)
    order = np.lexsort((ids, -scores), axis=1) if scores.size else np.zeros_like(ids)
    scores = np.take_along_axis(scores, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((q, pad), -np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((q, pad), -1, np.int64)], axis=1)
    return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def exact_search(
    blocks: Iterable[np.ndarray],
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of `queries` [q, D] over the concatenation of `blocks` (each [b, D]).

    exclude: per query one internal id to leave out (leave-one-out evaluation with database vectors as queries).
    allowed: optional boolean mask over all internal ids; others are never returned.
    Returns (scores [q, k] float32, ids [q, k] int64), padded with -inf / -1 when fewer than k vectors qualify.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    q = queries.shape[0]
    best_s = np.full((q, 0), -np.inf, np.float32)
    best_i = np.full((q, 0), -1, np.int64)
    offset = 0
    for block in blocks:
        b = block.shape[0]
        s = queries @ np.asarray(block, dtype=np.float32).T
        ids = np.broadcast_to(np.arange(offset, offset + b, dtype=np.int64), (q, b))
        if exclude is not None:
            s = np.where(ids == exclude[:, None], -np.inf, s)
        if allowed is not None:
            s = np.where(allowed[offset : offset + b][None, :], s, -np.inf)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, ids], axis=1)
        best_s, best_i = topk_rows(s_all, i_all, min(k, s_all.shape[1]))
        offset += b
    best_s, best_i = topk_rows(best_s, best_i, k)
    best_i = np.where(np.isfinite(best_s), best_i, -1)
    return best_s, best_i


def recall_at_k(found: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k found in the returned top-k ("k-recall@k"), tie-aware.

    gt_ids/gt_scores: exact results with at least k columns (more columns let ties beyond rank k count: a returned
    id whose exact score equals the k-th true score within TIE_EPS is as good as the one it replaced, the rule of
    faiss contrib/evaluation.py's range-based checks).
    """
    return float(recall_per_query(found, gt_ids, gt_scores, k).mean())


def recall_per_query(found: np.ndarray, gt_ids: np.ndarray, gt_scores: np.ndarray, k: int) -> np.ndarray:
    """`recall_at_k` of each query (float64 [q]): what a confidence bound over the queries needs."""
    if k <= 0:
        raise ValueError("k must be positive")
    found = found[:, :k]
    kth = gt_scores[:, k - 1]
    out = np.ones(found.shape[0])
    for qi in range(found.shape[0]):
        valid_true = int(np.sum(gt_ids[qi, :k] >= 0))
        if valid_true == 0:
            continue
        good = set(gt_ids[qi, :k].tolist())
        good.update(
            int(i) for i, s in zip(gt_ids[qi, k:], gt_scores[qi, k:], strict=True) if s >= kth[qi] - TIE_EPS
        )
        hits = sum(1 for i in found[qi].tolist() if i >= 0 and i in good)
        out[qi] = min(hits, valid_true) / valid_true
    return out
