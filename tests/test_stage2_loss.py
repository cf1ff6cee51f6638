"""hard_negative_infonce against the official formulation and on its edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uniretrieve.train.losses import hard_negative_infonce


def official(x: torch.Tensor, y: torch.Tensor, *, k: int, beta: float, tau: float) -> torch.Tensor:
    """deepglint/UniME loss.py semantics (docs/benchmarks.md#official-release-defects): mask S_ij > S_ii + β
    and the diagonal, top-k, CE."""
    s = x @ y.T
    thr = s.diagonal()[:, None] + beta
    masked = s.masked_fill(s > thr, float("-inf"))
    masked = masked.masked_fill(torch.eye(len(s), dtype=torch.bool), float("-inf"))
    neg = masked.topk(k, dim=1).values
    scores = torch.cat([s.diagonal()[:, None], neg], dim=1) / tau
    return F.cross_entropy(scores, torch.zeros(len(s), dtype=torch.long))


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1
    )


@pytest.mark.parametrize("seed", range(5))
def test_equals_official_when_k_candidates_survive(seed: int) -> None:
    q, t = _unit(32, 16, seed), _unit(32, 16, seed + 100)
    t = F.normalize(t + 1.5 * q, dim=-1)  # positives clearly above most negatives, as in training
    sim = q @ t.T
    survivors = ((sim <= sim.diagonal()[:, None] + 0.1) & ~torch.eye(32, dtype=torch.bool)).sum(1)
    assert survivors.min() >= 8
    got = hard_negative_infonce(q, t, k=8, beta=0.1, temperature=0.02)["loss"]
    torch.testing.assert_close(got, official(q, t, k=8, beta=0.1, tau=0.02))


def _one_query_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Query 0: positive cos 0.5, one survivor at 0.4, two false negatives at 0.9 (> 0.5 + 0.1)."""
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4, dtype=torch.float64)

    def vec(c: float, axis: int) -> list[float]:
        v = [0.0] * 4
        v[0], v[axis] = c, (1 - c * c) ** 0.5
        return v

    t = torch.tensor([vec(0.5, 1), vec(0.4, 2), vec(0.9, 3), vec(0.9, 1)], dtype=torch.float64)
    return q, t


def test_fewer_than_k_survivors_repeat_and_mask_never_use_positive_or_excluded() -> None:
    q, t = _one_query_case()
    tau = 0.1
    full_rep = hard_negative_infonce(q, t, k=3, beta=0.1, temperature=tau, fill="repeat", normalize=False)
    full_mask = hard_negative_infonce(q, t, k=3, beta=0.1, temperature=tau, fill="mask", normalize=False)
    assert full_rep["underfilled_rate"] > 0
    s = q @ t.T
    # Row 0 by hand: survivors {1}; repeat → [0.5, 0.4, 0.4, 0.4]; mask → [0.5, 0.4].
    row0_rep = -torch.log_softmax(torch.tensor([0.5, 0.4, 0.4, 0.4], dtype=torch.float64) / tau, 0)[0]
    row0_mask = -torch.log_softmax(torch.tensor([0.5, 0.4], dtype=torch.float64) / tau, 0)[0]

    def row_losses(fill: str) -> torch.Tensor:
        out = []
        for i in range(4):
            keep = [j for j in range(4) if j != i and s[i, j] <= s[i, i] + 0.1]
            negs = sorted((s[i, j].item() for j in keep), reverse=True)[:3]
            if fill == "repeat" and negs:
                negs = (negs * 3)[:3]
            logits = torch.tensor([s[i, i].item(), *negs], dtype=torch.float64) / tau
            out.append(-torch.log_softmax(logits, 0)[0])
        return torch.stack(out)

    assert row_losses("repeat")[0].item() == pytest.approx(row0_rep.item())
    assert row_losses("mask")[0].item() == pytest.approx(row0_mask.item())
    assert full_rep["loss"].item() == pytest.approx(row_losses("repeat").mean().item())
    assert full_mask["loss"].item() == pytest.approx(row_losses("mask").mean().item())
    # The official code fills missing slots with -inf logits (exp = 0): numerically the "mask" rule, not the
    # paper's stated "repeat" rule, which weighs the survivors more and so gives a larger loss here.
    assert official(q, t, k=3, beta=0.1, tau=tau).item() == pytest.approx(full_mask["loss"].item())
    assert full_rep["loss"].item() > full_mask["loss"].item()


def test_all_filtered_query_contributes_zero_and_in_batch_is_plain_infonce() -> None:
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # query 0: positive 0, the other target 1
    out = hard_negative_infonce(q, t, k=2, beta=0.1, temperature=0.5, normalize=False)
    # row 0: its only candidate (1.0 > 0 + 0.1) is excluded → loss 0; row 1: candidate 0.0 kept.
    row1 = -torch.log_softmax(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64) / 0.5, 0)[0]
    assert out["loss"].item() == pytest.approx(row1.item() / 2)
    assert out["false_negative_rate"].item() == pytest.approx(0.5)

    a, b = _unit(10, 8, 1), _unit(10, 8, 2)
    plain = F.cross_entropy((a @ b.T) / 0.05, torch.arange(10))
    got = hard_negative_infonce(a, b, temperature=0.05, in_batch=True)["loss"]
    torch.testing.assert_close(got, plain)


def test_symmetric_term_and_gradients_reach_both_sides() -> None:
    a = _unit(12, 8, 3).requires_grad_()
    b = _unit(12, 8, 4).requires_grad_()
    out = hard_negative_infonce(a, b, k=4, symmetric=True)
    back = hard_negative_infonce(b, a, k=4)
    torch.testing.assert_close(out["tq_loss"], back["qt_loss"])
    torch.testing.assert_close(out["loss"], (out["qt_loss"] + out["tq_loss"]) / 2)
    out["loss"].backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_same_target_candidates_are_never_negatives() -> None:
    q, t = _unit(12, 8, 5), _unit(12, 8, 6)
    t[3] = t[0]  # rows 0 and 3 share their target (e.g. the same VQA answer)
    same = torch.zeros(12, 12, dtype=torch.bool)
    same[0, 3] = same[3, 0] = True
    same |= torch.eye(12, dtype=torch.bool)
    for in_batch in (False, True):
        masked = hard_negative_infonce(q, t, k=4, same_target=same, in_batch=in_batch)
        # Equivalent: the duplicate candidate made infinitely dissimilar for rows 0 and 3.
        s = q @ t.T
        ref = s.clone()
        ref[0, 3] = ref[3, 0] = -1e4
        if in_batch:
            want = F.cross_entropy(ref / 0.02, torch.arange(12))
        else:
            keep = [official_row(ref, i, k=4, beta=0.1, tau=0.02) for i in range(12)]
            want = torch.stack(keep).mean()
        torch.testing.assert_close(masked["loss"], want)


def official_row(s: torch.Tensor, i: int, *, k: int, beta: float, tau: float) -> torch.Tensor:
    cand = [j for j in range(len(s)) if j != i and s[i, j] <= s[i, i] + beta and s[i, j] > -1e3]
    negs = sorted((s[i, j] for j in cand), reverse=True)[:k]
    negs = (negs * k)[:k] if negs else []
    logits = torch.stack([s[i, i], *negs]) / tau
    return -torch.log_softmax(logits, 0)[0]


def test_labelled_negative_is_one_more_unfiltered_logit_of_its_query() -> None:
    q, t = _unit(12, 8, 1), _unit(12, 8, 2)
    t = F.normalize(t + 1.5 * q, dim=-1)
    # Above the positive + beta: the filter would drop it as a false negative; a labelled one stays.
    neg = F.normalize(q + 0.05 * _unit(12, 8, 3), dim=-1)
    mask = torch.arange(12) % 3 != 0
    got = hard_negative_infonce(q, t, k=4, beta=0.1, temperature=0.05, negative=neg, negative_mask=mask)
    s = q @ t.T
    losses = []
    for i in range(12):
        cand = [j for j in range(12) if j != i and s[i, j] <= s[i, i] + 0.1]
        hard = sorted(cand, key=lambda j: -s[i, j].item())[:4]
        logits = [s[i, i], *[s[i, j] for j in hard]] + ([q[i] @ neg[i]] if mask[i] else [])
        losses.append(-torch.log_softmax(torch.stack(logits) / 0.05, 0)[0])
    torch.testing.assert_close(got["loss"], torch.stack(losses).mean())
    assert got["labelled_negative_sim"].item() == pytest.approx((q * neg).sum(1)[mask].mean().item())
    in_batch = hard_negative_infonce(q, t, temperature=0.05, in_batch=True, negative=neg, negative_mask=mask)
    extra = ((q * neg).sum(1, keepdim=True) / 0.05).masked_fill(~mask[:, None], float("-inf"))
    want = F.cross_entropy(torch.cat([s / 0.05, extra], 1), torch.arange(12))
    torch.testing.assert_close(in_batch["loss"], want)
    plain = hard_negative_infonce(q, t, k=4, beta=0.1, temperature=0.05)
    assert "labelled_negative_sim" not in plain and plain["loss"] < got["loss"]
    with pytest.raises(ValueError, match="negative must be"):
        hard_negative_infonce(q, t, negative=neg[:3])
