"""How closely a student's text embeddings reproduce the teacher's similarity structure (the goal of stage 1).

Stage 1 distils the teacher's in-batch similarity *distributions* (UniME paper §3.2; docs/method.md#stage-1-loss),
so the natural check on held-out sentences is rank agreement of the pairwise similarities: the Spearman
correlation, over all unordered pairs (i < j) of n texts, between the student's cosine cos_s(i, j) and the
teacher's cos_t(i, j). Pearson and top-1 neighbour agreement are reported alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from uniretrieve.train.teacher import TeacherConfig, teacher_embeddings


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array; tied values share the mean of their ranks (as Spearman's rho requires)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # Group boundaries of equal values in sorted order; each group gets the mean of its positions.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def pairwise_agreement(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """Agreement of two embeddings `[n, d_s]`, `[n, d_t]` of the same n texts (rows need not be normalised).

    Returns spearman / pearson (over the n(n−1)/2 pairwise cosines) and top1_agreement (share of texts whose most
    similar other text is the same under both).
    """
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"need [n, d_s] and [n, d_t] of the same n; got {student.shape} and {teacher.shape}")
    n = student.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 texts for a pairwise correlation; got {n}")
    s = student.astype(np.float64)
    t = teacher.astype(np.float64)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    cs, ct = s @ s.T, t @ t.T
    iu = np.triu_indices(n, k=1)
    a, b = cs[iu], ct[iu]
    np.fill_diagonal(cs, -np.inf)
    np.fill_diagonal(ct, -np.inf)
    return {
        "spearman": _pearson(average_ranks(a), average_ranks(b)),
        "pearson": _pearson(a, b),
        "top1_agreement": float((cs.argmax(1) == ct.argmax(1)).mean()),
        "n_texts": n,
    }


def teacher_agreement(
    model: str,
    texts: Sequence[str],
    teacher: TeacherConfig,
    *,
    adapter: str | None = None,
    device: str | None = None,
    batch_size: int = 32,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Embed `texts` with a student checkpoint (the Encoder's stage-1 text prompt) and the cached teacher; compare."""
    from uniretrieve.models.encoder import Encoder

    encoder = Encoder.from_pretrained(
        model, device=device, adapter=adapter, trust_remote_code=trust_remote_code
    )
    student = encoder.encode_texts(list(texts), batch_size=batch_size)
    teach = teacher_embeddings(list(texts), teacher, device=device)
    out: dict[str, Any] = pairwise_agreement(student, teach.vectors)
    out.update(model=model, adapter=adapter, teacher=teacher.model)
    return out
