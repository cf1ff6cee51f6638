"""UniME training losses as pure functions of embeddings.

Conventions shared by every function here:

* Similarities are cosines: inputs are L2-normalised inside (idempotent for the encoder's already-normalised
  output, and its Jacobian is then the same projection, so gradients w.r.t. the model are unchanged).
* Temperature: ``logits = similarity / temperature`` (sentence-transformers' ``scale`` is ``1 / temperature``).
* Arithmetic runs in at least float32 (bf16/fp16 embeddings are upcast; float64 stays float64).
* Every function returns a dict: the total under ``"loss"``, the terms under ``"*_loss"``, and detached
  statistics (scalars, for logging) under other keys.
* Batches are *global*: to train on more than one rank, pass ``gather_with_grad(local)`` (train/distributed.py)
  and backpropagate ``loss * ddp_loss_scale()``.

Sources: [P] = UniME paper (arXiv 2504.17432v4), [R] = deepglint/UniME loss.py, [E5V] = kongds/E5-V ft_llm.py;
see docs/method.md#stage-1-loss and docs/method.md#stage-2-loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KDDirection = Literal["teacher_student", "student_teacher"]
Reduction = Literal["mean", "sum"]
Fill = Literal["repeat", "mask"]

_DIRECTIONS = ("teacher_student", "student_teacher")
_REDUCTIONS = ("mean", "sum")
_FILLS = ("repeat", "mask")


def _check_matrix(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor [n, d]; got shape {tuple(x.shape)}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax over ~1000 logits of size up to 1/τ = 50 is not trustworthy in bf16/fp16.
    return torch.promote_types(dtype, torch.float32)


def _nan(like: torch.Tensor) -> torch.Tensor:
    """A NaN statistic for "no data" (e.g. no negative selected in the whole batch)."""
    return torch.full((), float("nan"), dtype=like.dtype, device=like.device)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (logits = similarity / temperature); got {temperature}")


# --------------------------------------------------------------------------------------------------------------
# Stage 1: textual discriminative knowledge distillation ([P] §3.2, Eq. 2)
# --------------------------------------------------------------------------------------------------------------


def kd_kl_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float = 0.05,
    direction: KDDirection = "teacher_student",
    include_diagonal: bool = False,
    reduction: Reduction = "mean",
) -> dict[str, torch.Tensor]:
    """KL divergence between the student's and the teacher's in-batch similarity distributions (UniME stage 1).

    Inputs:

    ==============  ============  ====================================================================
    argument        shape         meaning
    ==============  ============  ====================================================================
    student         [n, d_s]      student (MLLM's LLM) embeddings of n texts; gradients flow here
    teacher         [n, d_t]      teacher (NV-Embed-v2) embeddings of the *same* n texts, same order;
                                  any d_t; treated as a constant (detached)
    ==============  ============  ====================================================================

    Both sides are L2-normalised, then for each side the n×n cosine matrix C gives row distributions
    ``P[i] = softmax_j(C[i, j] / temperature)``. Per row i the loss is a KL divergence between P_s[i] and P_t[i];
    rows are averaged (``reduction="mean"``) or summed (``"sum"``, exactly [P] Eq. 2).

    Choices the paper leaves open (docs/method.md#stage-1-loss, all UNCONFIRMED there), with the reasons for
    the defaults:

    * ``direction="teacher_student"``: KL(P_t ‖ P_s), the standard forward distillation loss (Hinton et al. 2015):
      it equals the cross-entropy of the student against the teacher's soft labels up to a constant, is
      mass-covering (the student is pushed up wherever the teacher puts mass), and its gradient w.r.t. the
      student logits is the bounded (P_s − P_t) / τ. The reverse KL(P_s ‖ P_t) ("student_teacher", the order as
      typeset in Eq. 2) weights its signal by P_s, so rows where the untrained student puts no mass on the
      teacher's neighbours get almost no gradient; it is available for a faithful-to-the-typesetting run.
    * ``temperature=0.05``: the SimCSE/E5-V value ([E5V] ``Similarity(temp=0.05)``), the recipe UniME's stage 1
      copies (same NLI data, prompt and pooling). Off-diagonal cosines of a text embedder span a few tenths, so
      1/τ = 20 turns a 0.3 cosine gap into a 6-nat logit gap: the teacher's distribution is peaked on its true
      neighbours without being one-hot, so the relative ranking of the other items still carries mass. τ=0.02
      (UniME-V2's value for its own symmetric KL) makes the same gap 15 nats, i.e. nearly one-hot rows.
      The "teacher_entropy" statistic reports how peaked the teacher is for the chosen τ.
    * ``include_diagonal=False``: the diagonal is cos(e_i, e_i) = 1 for student and teacher alike, so its logit
      is the constant 1/τ and carries no information; being the largest logit of every row it absorbs most of the
      mass at small τ (e^{(1−c)/τ} times any neighbour at cosine c), which makes both rows nearly one-hot on i and
      shrinks the KL and its gradient by the off-diagonal mass. Masking leaves distributions over the other n−1
      items: exactly the teacher's neighbourhood structure. ``True`` gives Eq. 2 taken literally.
    * ``reduction="mean"``: the per-row average keeps the loss scale independent of the batch size (768 in
      [P] Table 6, far smaller in tests and GradCache chunks). Eq. 2's sum is the same loss times n; under AdamW
      a constant factor is absorbed by the update normalisation, so nothing is lost by the default.

    Returns:
        dict with ``"loss"`` (= ``"kd_loss"``, scalar, differentiable w.r.t. ``student``) and detached statistics:
        ``"teacher_entropy"`` / ``"student_entropy"`` (mean row entropy in nats) and ``"top1_agreement"`` (share of
        rows whose most similar other item is the same for student and teacher; with the diagonal included the
        argmax is usually the diagonal itself).
    """
    _check_matrix(student, "student")
    _check_matrix(teacher, "teacher")
    _check_temperature(temperature)
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}; got {direction!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    n = student.shape[0]
    if teacher.shape[0] != n:
        raise ValueError(
            f"student and teacher must embed the same n items in the same order; got {n} student rows and "
            f"{teacher.shape[0]} teacher rows"
        )
    if not include_diagonal and n < 2:
        raise ValueError("kd_kl_loss with include_diagonal=False needs a batch of at least 2 items")

    dtype = _compute_dtype(student.dtype)
    s = F.normalize(student.to(dtype), dim=-1)
    t = F.normalize(teacher.detach().to(device=student.device, dtype=dtype), dim=-1)
    logits_s = s @ s.T / temperature  # [n, n]
    logits_t = t @ t.T / temperature  # [n, n]
    if not include_diagonal:
        off = ~torch.eye(n, dtype=torch.bool, device=student.device)
        logits_s = logits_s[off].view(n, n - 1)
        logits_t = logits_t[off].view(n, n - 1)

    log_p_s = F.log_softmax(logits_s, dim=-1)
    log_p_t = F.log_softmax(logits_t, dim=-1)
    p_s, p_t = log_p_s.exp(), log_p_t.exp()
    if direction == "teacher_student":
        kl_rows = (p_t * (log_p_t - log_p_s)).sum(dim=-1)  # KL(P_t ‖ P_s) per row, [n]
    else:
        kl_rows = (p_s * (log_p_s - log_p_t)).sum(dim=-1)  # KL(P_s ‖ P_t) per row, [n]
    kd = kl_rows.mean() if reduction == "mean" else kl_rows.sum()

    with torch.no_grad():
        stats = {
            "teacher_entropy": -(p_t * log_p_t).sum(-1).mean(),
            "student_entropy": -(p_s * log_p_s).sum(-1).mean(),
            "top1_agreement": (logits_s.argmax(-1) == logits_t.argmax(-1)).to(dtype).mean(),
        }
    return {"loss": kd, "kd_loss": kd, **{k: v.detach() for k, v in stats.items()}}


# --------------------------------------------------------------------------------------------------------------
# Stage 2: hard-negative enhanced InfoNCE ([P] §3.3, Eq. 4)
# --------------------------------------------------------------------------------------------------------------


def _select_hard_negatives(
    sim: torch.Tensor, *, k: int, beta: float, fill: Fill, same: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Filter false negatives and pick the k hardest survivors per row, on a *detached* [n, n] similarity matrix.

    Returns:
        idx [n, k] (long): column of the negative in each slot,
        valid [n, k] (bool): slot enters the softmax,
        excluded [n, n] (bool): off-diagonal candidates removed as false negatives,
        distinct [n, k] (bool): slot holds a distinct selected survivor (for statistics),
        n_candidates [n] (long): number of surviving candidates per row (before the top-k cut).
    """
    n = sim.shape[0]
    device = sim.device
    eye = torch.eye(n, dtype=torch.bool, device=device)
    positive = sim.diagonal()
    # [P] §3.3.1: α_i = cos(q_i, c_i+) + β; every candidate above α_i is a likely false negative.
    excluded = (sim > positive[:, None] + beta) & ~eye
    if same is not None:  # candidates known to equal the positive (the same answer text or image)
        excluded = excluded | (same & ~eye)
    candidate = ~eye & ~excluded
    n_candidates = candidate.sum(dim=1)
    slot = torch.arange(k, device=device)
    kk = min(k, n - 1)
    if kk == 0:  # a single-item batch has no candidates at all
        none = torch.zeros(n, k, dtype=torch.bool, device=device)
        return torch.zeros(n, k, dtype=torch.long, device=device), none, excluded, none, n_candidates

    # Sorted descending, so every surviving candidate (finite) precedes every masked entry (−inf): the first
    # min(n_candidates, k) columns of `top` are exactly the hardest survivors, never the positive or an excluded one.
    _, top = sim.masked_fill(~candidate, float("-inf")).topk(kk, dim=1)
    n_selected = n_candidates.clamp(max=k)  # distinct negatives available per row, ≤ kk
    distinct = slot[None, :] < n_selected[:, None]
    if fill == "repeat":
        # [P] §3.3.2: "if fewer than k remain, duplicate existing ones": cycle through the survivors, hardest first,
        # so each is used ⌊k/m⌋ or ⌈k/m⌉ times. With no survivor at all there is nothing to duplicate: every slot
        # is masked and the row's loss is −log 1 = 0 (same as fill="mask").
        src = slot[None, :] % n_selected.clamp(min=1)[:, None]
        valid = (n_selected > 0)[:, None].expand(n, k)
    else:
        src = slot.clamp(max=kk - 1)[None, :].expand(n, k)
        valid = distinct
    idx = top.gather(1, src)
    return idx, valid, excluded, distinct, n_candidates


def _hard_negative_direction(
    sim: torch.Tensor,
    *,
    k: int,
    beta: float,
    temperature: float,
    fill: Fill,
    same: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean InfoNCE over rows of `sim` [n, n] (row i: anchor i, positive column i), plus detached statistics.
    extra: (similarities [n, 1], valid [n, 1]) of one more negative per row, never filtered."""
    n = sim.shape[0]
    detached = sim.detach()
    idx, valid, excluded, distinct, n_candidates = _select_hard_negatives(
        detached, k=k, beta=beta, fill=fill, same=same
    )
    positive = sim.diagonal()[:, None]  # [n, 1], differentiable
    negatives = sim.gather(1, idx)  # [n, k], differentiable through the selected entries only
    columns, keep = [positive, negatives], [torch.ones(n, 1, dtype=torch.bool, device=sim.device), valid]
    if extra is not None:
        columns.append(extra[0])
        keep.append(extra[1])
    logits = torch.cat(columns, dim=1) / temperature
    logits = logits.masked_fill(~torch.cat(keep, dim=1), float("-inf"))
    loss = -F.log_softmax(logits, dim=1)[:, 0].mean()

    with torch.no_grad():
        dtype = detached.dtype
        picked = detached.gather(1, idx)[distinct]
        stats = {
            "false_negative_rate": excluded.sum().to(dtype) / max(n * (n - 1), 1),
            "hard_negative_sim": picked.mean() if picked.numel() else _nan(detached),
            "positive_sim": detached.diagonal().mean(),
            "underfilled_rate": (n_candidates < k).to(dtype).mean(),
            **_labelled_stats(extra, detached),
        }
    return loss, stats


def _labelled_stats(
    extra: tuple[torch.Tensor, torch.Tensor] | None, like: torch.Tensor
) -> dict[str, torch.Tensor]:
    if extra is None:
        return {}
    picked = extra[0].detach()[extra[1]]
    return {"labelled_negative_sim": picked.mean() if picked.numel() else _nan(like)}


def _in_batch_direction(
    sim: torch.Tensor,
    *,
    beta: float,
    temperature: float,
    same: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Plain in-batch InfoNCE: every other column is a negative (except known duplicates of the positive); no
    similarity filtering (statistics still report what the filter would remove). extra: one more negative per row,
    as in `_hard_negative_direction`."""
    n = sim.shape[0]
    labels = torch.arange(n, device=sim.device)
    logits = sim / temperature
    if same is not None:
        logits = logits.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=sim.device), float("-inf"))
    if extra is not None:
        logits = torch.cat([logits, (extra[0] / temperature).masked_fill(~extra[1], float("-inf"))], dim=1)
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        detached = sim.detach()
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        excluded = (detached > detached.diagonal()[:, None] + beta) & ~eye
        off = detached[~eye]
        stats = {
            "false_negative_rate": excluded.sum().to(detached.dtype) / max(n * (n - 1), 1),
            "hard_negative_sim": off.mean() if off.numel() else _nan(detached),
            "positive_sim": detached.diagonal().mean(),
            "underfilled_rate": torch.zeros((), dtype=detached.dtype, device=sim.device),
            **_labelled_stats(extra, detached),
        }
    return loss, stats


def hard_negative_infonce(
    query: torch.Tensor,
    target: torch.Tensor,
    *,
    k: int = 8,
    beta: float = 0.1,
    temperature: float = 0.02,
    fill: Fill = "repeat",
    symmetric: bool = False,
    in_batch: bool = False,
    normalize: bool = True,
    same_target: torch.Tensor | None = None,
    negative: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """InfoNCE over the positive and the k hardest in-batch negatives, after false-negative filtering (UniME stage 2).

    Inputs:

    ========  =======  ======================================================================================
    argument  shape    meaning
    ========  =======  ======================================================================================
    query     [n, d]   query embeddings (image/text + instruction); row i's positive is ``target[i]``
    target    [n, d]   target (candidate) embeddings; the negatives of query i are drawn from the other rows
    ========  =======  ======================================================================================

    With S = q̂ · t̂ᵀ [n, n] (cosines; pass the *global* batch when training on several ranks), for each query i
    ([P] §3.3, Eq. 4):

    1. False-negative filter: every j ≠ i with ``S[i, j] > S[i, i] + beta`` is excluded (β = 0.1, [P] §4.1).
       The positive j = i is never a negative.
    2. Hard negatives: the ``k`` remaining candidates with the highest S[i, j] (k = 8, [P] §4.1).
    3. ``loss_i = −log softmax([S[i, i], S[i, n_1], …, S[i, n_k]] / temperature)[0]``; the loss is the mean over
       all n queries. τ = 0.02 is the official default ([R] loss.py; the paper does not state it).

    Selection (steps 1–2) runs on detached similarities; gradients flow only through the selected logits,
    to both ``query`` and ``target``.

    When fewer than k candidates survive the filter for a query:

    * ``fill="repeat"`` ([P] §3.3.2, "duplicate existing ones"): the survivors are cycled, hardest first, until the
      k slots are full. With zero survivors nothing can be duplicated: all slots are masked, the query's loss is
      −log 1 = 0 (no gradient) and it still counts in the mean's denominator, so the loss stays a mean over n.
    * ``fill="mask"``: the missing slots are removed from the softmax (the query sees only its m < k survivors).

    Either way the positive and the excluded candidates never enter as negatives (the official code lets them in;
    docs/benchmarks.md#official-release-defects).

    Args:
        k: number of hard negatives per query (≥ 1).
        beta: margin of the false-negative filter, in cosine units.
        temperature: logits = cosine / temperature.
        fill: "repeat" or "mask", see above.
        symmetric: also compute the target→query term (negatives drawn from the query side, same filter on Sᵀ);
            then ``loss = (qt_loss + tq_loss) / 2``. Default off, as in [P] Eq. 4 and [R].
        in_batch: ignore the filter and top-k and use every other row as a negative (plain in-batch InfoNCE,
            ``cross_entropy(S / τ, arange(n))``); an ablation baseline.
        same_target: optional [n, n] bool, True where target j is known to be the same content as target i (the
            same answer text or image, frequent in classification and VQA data). Such candidates are excluded like
            false negatives, whatever their similarity: they are positives the β filter cannot see (their similarity
            equals the positive's). Default None: the paper's behaviour.
        normalize: L2-normalise the inputs (default). Set False only for inputs that are already unit vectors
            and where raw dot products are wanted.
        negative: optional [n, d], a labelled negative of each query (the data's own hard negative, e.g. a
            caption of a minimally changed scene). Query i's softmax gets one more logit, cos(q_i, negative_i) / τ,
            never filtered (it is known to be wrong, however similar), in the query→target direction only; rows
            whose ``negative_mask`` [n] (bool) is False have none. Default None: the paper's loss (its negatives
            come from the batch alone).

    Returns:
        ``"loss"`` (scalar; with ``symmetric`` the mean of the two terms, otherwise ``qt_loss``), ``"qt_loss"``,
        ``"tq_loss"`` (only when ``symmetric``), and detached statistics of the query→target direction:
        ``"false_negative_rate"`` (share of the n(n−1) off-diagonal pairs removed by the filter; in ``in_batch`` mode
        the share the filter *would* remove), ``"hard_negative_sim"`` (mean cosine of the distinct selected negatives;
        in ``in_batch`` mode of all off-diagonal pairs; NaN if there are none), ``"positive_sim"`` (mean S[i, i]),
        ``"underfilled_rate"`` (share of queries with fewer than k surviving candidates); with ``negative``,
        ``"labelled_negative_sim"`` (mean cos(q_i, negative_i) over the rows that have one).
    """
    _check_matrix(query, "query")
    _check_matrix(target, "target")
    _check_temperature(temperature)
    if query.shape != target.shape:
        raise ValueError(
            f"query and target must be paired row by row with the same dim; got {tuple(query.shape)} and "
            f"{tuple(target.shape)}"
        )
    if k < 1:
        raise ValueError(f"k (hard negatives per query) must be >= 1; got {k}")
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}; got {fill!r}")

    dtype = _compute_dtype(query.dtype)
    q, t = query.to(dtype), target.to(dtype)
    if normalize:
        q, t = F.normalize(q, dim=-1), F.normalize(t, dim=-1)
    sim = q @ t.T  # [n, n]: sim[i, j] = cos(query i, target j)

    if same_target is not None and same_target.shape != sim.shape:
        raise ValueError(f"same_target must be [n, n] = {tuple(sim.shape)}; got {tuple(same_target.shape)}")
    same = None if same_target is None else same_target.to(device=sim.device, dtype=torch.bool)
    extra = None
    if negative is not None:
        _check_matrix(negative, "negative")
        if negative.shape != query.shape:
            raise ValueError(f"negative must be [n, d] = {tuple(query.shape)}; got {tuple(negative.shape)}")
        neg = negative.to(dtype)
        neg = F.normalize(neg, dim=-1) if normalize else neg
        mask = (
            torch.ones(len(q), dtype=torch.bool, device=sim.device)
            if negative_mask is None
            else negative_mask
        )
        extra = ((q * neg).sum(-1, keepdim=True), mask.to(device=sim.device, dtype=torch.bool)[:, None])

    def direction(
        s: torch.Tensor, ex: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if in_batch:
            return _in_batch_direction(s, beta=beta, temperature=temperature, same=same, extra=ex)
        return _hard_negative_direction(
            s, k=k, beta=beta, temperature=temperature, fill=fill, same=same, extra=ex
        )

    qt_loss, stats = direction(sim, extra)
    out: dict[str, torch.Tensor] = {"loss": qt_loss, "qt_loss": qt_loss}
    if symmetric:
        tq_loss, _ = direction(sim.T)
        out["tq_loss"] = tq_loss
        out["loss"] = (qt_loss + tq_loss) / 2
    out.update({name: value.detach() for name, value in stats.items()})
    return out
