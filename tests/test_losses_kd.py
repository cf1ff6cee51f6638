"""kd_kl_loss (stage-1 KD) against a direct float64 computation, for every option."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from uniretrieve.train.losses import kd_kl_loss


def direct_kd(s: np.ndarray, t: np.ndarray, tau: float, direction: str, diag: bool, reduction: str) -> dict:
    """Eq. 2 of the paper written out with Python loops in float64: row softmaxes of cosine/τ, KL per row."""
    n = s.shape[0]

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).sum(axis=1, keepdims=True))

    s, t = unit(s.astype(np.float64)), unit(t.astype(np.float64))
    rows, ent_s, ent_t, agree = [], [], [], []
    for i in range(n):
        cols = [j for j in range(n) if diag or j != i]
        ls = [float(s[i] @ s[j]) / tau for j in cols]
        lt = [float(t[i] @ t[j]) / tau for j in cols]
        zs = sum(math.exp(v - max(ls)) for v in ls)
        zt = sum(math.exp(v - max(lt)) for v in lt)
        ps = [math.exp(v - max(ls)) / zs for v in ls]
        pt = [math.exp(v - max(lt)) / zt for v in lt]
        if direction == "teacher_student":
            kl = sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt, strict=True))
        else:
            kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(ps, pt, strict=True))
        rows.append(kl)
        ent_s.append(-sum(a * math.log(a) for a in ps))
        ent_t.append(-sum(b * math.log(b) for b in pt))
        agree.append(float(int(np.argmax(ls)) == int(np.argmax(lt))))
    loss = sum(rows) / n if reduction == "mean" else sum(rows)
    return {
        "loss": loss,
        "student_entropy": np.mean(ent_s),
        "teacher_entropy": np.mean(ent_t),
        "top1": np.mean(agree),
    }


def _inputs(seed: int, n: int = 7, ds: int = 5, dt: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ds, generator=g, dtype=torch.float64), torch.randn(
        n, dt, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize(
    ("direction", "diag", "reduction", "tau"),
    list(
        itertools.product(["teacher_student", "student_teacher"], [False, True], ["mean", "sum"], [0.05, 0.5])
    ),
)
def test_matches_direct_float64(direction: str, diag: bool, reduction: str, tau: float) -> None:
    s, t = _inputs(1)
    out = kd_kl_loss(s, t, temperature=tau, direction=direction, include_diagonal=diag, reduction=reduction)
    ref = direct_kd(s.numpy(), t.numpy(), tau, direction, diag, reduction)
    assert out["loss"].dtype == torch.float64
    assert out["loss"].item() == pytest.approx(ref["loss"], rel=1e-10, abs=1e-12)
    assert out["kd_loss"].item() == out["loss"].item()
    assert out["student_entropy"].item() == pytest.approx(ref["student_entropy"], rel=1e-10)
    assert out["teacher_entropy"].item() == pytest.approx(ref["teacher_entropy"], rel=1e-10)
    assert out["top1_agreement"].item() == pytest.approx(ref["top1"])


@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
@pytest.mark.parametrize("diag", [False, True])
def test_gradient_matches_autograd_of_direct_formula(direction: str, diag: bool) -> None:
    """The student gradient equals the float64 autograd gradient of the textbook formula; teacher gets none."""
    s, t = _inputs(2)
    s1 = s.clone().requires_grad_(True)
    t1 = t.clone().requires_grad_(True)
    kd_kl_loss(s1, t1, temperature=0.1, direction=direction, include_diagonal=diag)["loss"].backward()
    assert t1.grad is None  # the teacher is a constant

    s2 = s.clone().requires_grad_(True)
    sn = s2 / s2.norm(dim=1, keepdim=True)
    tn = t / t.norm(dim=1, keepdim=True)
    ls, lt = sn @ sn.T / 0.1, tn @ tn.T / 0.1
    if not diag:
        big = torch.eye(len(s)) * 1e9
        ls, lt = ls - big, lt - big  # exp(−1e9) = 0: the diagonal drops out of both softmaxes
    log_ps, log_pt = torch.log_softmax(ls, 1), torch.log_softmax(lt, 1)
    if direction == "teacher_student":
        kl = (log_pt.exp() * (log_pt - log_ps)).sum() / len(s)
    else:
        kl = (log_ps.exp() * (log_ps - log_pt)).sum() / len(s)
    kl.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-8, atol=1e-10)


def test_zero_iff_same_similarity_structure() -> None:
    """Identical geometry (an orthogonal rotation and rescaling of the teacher) → KL 0; a different one → > 0."""
    _, t = _inputs(3, dt=6)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    student = (t @ q) * 3.0  # same cosines, other basis, other norms
    for direction in ("teacher_student", "student_teacher"):
        out = kd_kl_loss(student, t, temperature=0.05, direction=direction)
        assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)
        assert out["top1_agreement"].item() == 1.0
    other, _ = _inputs(4, ds=6)
    assert kd_kl_loss(other, t, temperature=0.05)["loss"].item() > 1e-3


def test_low_precision_inputs_compute_in_float32() -> None:
    s, t = _inputs(5)
    ref = kd_kl_loss(s.to(torch.bfloat16).double(), t, temperature=0.05)["loss"].item()
    out = kd_kl_loss(s.to(torch.bfloat16), t.to(torch.bfloat16), temperature=0.05)
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(ref, rel=2e-2)


def test_defaults_are_the_documented_ones() -> None:
    """Defaults: KL(teacher‖student), τ = 0.05, diagonal masked, mean over rows (justified in the docstring)."""
    s, t = _inputs(6)
    ref = direct_kd(s.numpy(), t.numpy(), 0.05, "teacher_student", False, "mean")["loss"]
    assert kd_kl_loss(s, t)["loss"].item() == pytest.approx(ref, rel=1e-10)


def test_bad_inputs_are_named() -> None:
    s, t = _inputs(7)
    with pytest.raises(ValueError, match="same n items"):
        kd_kl_loss(s, t[:-1])
    with pytest.raises(ValueError, match="temperature"):
        kd_kl_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="direction"):
        kd_kl_loss(s, t, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        kd_kl_loss(s, t, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        kd_kl_loss(s[:1], t[:1])
    with pytest.raises(ValueError, match="2-D"):
        kd_kl_loss(s[0], t[0])
    # With the diagonal included a single item is a valid (trivial) batch: one-point distributions, KL 0.
    assert kd_kl_loss(s[:1], t[:1], include_diagonal=True)["loss"].item() == 0.0
