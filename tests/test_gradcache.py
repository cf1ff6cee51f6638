"""GradCache: chunked (cached) steps give the full-batch parameter gradients, on the tiny MLLM and on two sides."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uniretrieve.train.config import LoraConfig
from uniretrieve.train.gradcache import gradcache_step, split_batch
from uniretrieve.train.losses import kd_kl_loss
from uniretrieve.train.student import build_student
from uniretrieve.types import Item

pytestmark = pytest.mark.usefixtures("single_thread")

TEXTS = [
    "a red circle",
    "two green triangles next to a yellow star",
    "the quick brown fox jumps over the lazy dog",
    "a blue square",
    "a chat between a curious human and an assistant",
    "0123456789",
    "Represent the given image for classification.",
    "star",
]


def _student(model_dir, dropout: float = 0.0):
    torch.manual_seed(0)
    # "random" init: B ≠ 0, so every LoRA matrix (A included) gets a non-zero gradient.
    lora = LoraConfig(r=4, alpha=8, dropout=dropout, init="random")
    return build_student(str(model_dir), lora, device="cpu", precision="fp32")


def _grads(student) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in student.trainable_parameters() if p.grad is not None}


def _zero(student) -> None:
    for _, p in student.trainable_parameters():
        p.grad = None


def _close(got: torch.Tensor, want: torch.Tensor, msg: str) -> None:
    # float32 sums in another order: allow 1e-5 of the tensor's scale (observed ~1e-6), not of each tiny entry.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item(), msg=msg)


def test_cached_step_equals_plain_full_batch_step(tiny_model_dir) -> None:
    student = _student(tiny_model_dir)
    teacher = torch.randn(len(TEXTS), 12, generator=torch.Generator().manual_seed(1))
    inputs = student.prepare([Item(text=t) for t in TEXTS]).inputs

    plain = kd_kl_loss(student.embed(inputs), teacher)
    plain["loss"].backward()
    want = _grads(student)
    assert len(want) == len(student.trainable_parameters())
    assert all(g.abs().sum() > 0 for g in want.values())

    for chunk in (1, 3, len(TEXTS)):
        _zero(student)
        out = gradcache_step([student.embed], [inputs], lambda s: kd_kl_loss(s, teacher), chunk_size=chunk)
        assert out["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-5)
        got = _grads(student)
        assert got.keys() == want.keys()
        for name in want:
            _close(got[name], want[name], f"chunk {chunk}: {name}")


def test_dropout_is_replayed_exactly(tiny_model_dir) -> None:
    """With LoRA dropout the cached step equals backprop through the same chunked forwards (same RNG stream),
    and leaves the global RNG where that computation leaves it."""
    student = _student(tiny_model_dir, dropout=0.3)
    teacher = torch.randn(len(TEXTS), 12, generator=torch.Generator().manual_seed(2))
    inputs = student.prepare([Item(text=t) for t in TEXTS]).inputs
    chunks = split_batch(inputs, 3)

    torch.manual_seed(123)
    a = student.embed(inputs).detach()
    b = student.embed(inputs).detach()
    assert not torch.allclose(a, b)  # dropout is active: a replay that went wrong would show

    torch.manual_seed(7)
    reps = torch.cat([student.embed(c) for c in chunks])
    kd_kl_loss(reps, teacher)["loss"].backward()
    want = _grads(student)
    after_reference = torch.get_rng_state()

    _zero(student)
    torch.manual_seed(7)
    gradcache_step([student.embed], [inputs], lambda s: kd_kl_loss(s, teacher), chunk_size=3)
    got = _grads(student)
    assert torch.equal(torch.get_rng_state(), after_reference)
    for name in want:
        _close(got[name], want[name], name)


def _info_nce(q: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    sim = F.normalize(q, dim=-1) @ F.normalize(t, dim=-1).T / 0.05
    labels = torch.arange(len(q))
    loss = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2
    return {"loss": loss}


def test_two_sides_with_shared_and_separate_encoders() -> None:
    torch.manual_seed(0)
    enc_q = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).double()
    enc_t = torch.nn.Linear(5, 8).double()
    xq, xt = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 5, dtype=torch.float64)
    params = [*enc_q.parameters(), *enc_t.parameters()]

    _info_nce(enc_q(xq), enc_t(xt))["loss"].backward()
    want = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    gradcache_step([enc_q, enc_t], [xq, xt], _info_nce, chunk_size=4, loss_scale=1.0)
    for g, p in zip(want, params, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
    for p in params:  # one chunk per side: the single pass, same gradients
        p.grad = None
    gradcache_step([enc_q, enc_t], [xq, xt], _info_nce, chunk_size=10)
    for g, p in zip(want, params, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)

    # loss_scale multiplies the gradients (DDP's average is undone by scaling with the world size).
    for p in params:
        p.grad = None
    gradcache_step([enc_q, enc_t], [xq, xt], _info_nce, chunk_size=3, loss_scale=2.0)
    for g, p in zip(want, params, strict=True):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [2, 6])  # 6: one chunk per side, the single-pass path
def test_missing_gradient_is_an_error_not_a_silent_zero(chunk: int) -> None:
    enc = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    # A loss that detaches its input, as the official UniME gather effectively does, trains nothing.
    with pytest.raises(ValueError, match="no gradient"):
        gradcache_step(
            [enc], [x], lambda r: {"loss": (r.detach() ** 2).sum() + enc.bias.sum() * 0}, chunk_size=chunk
        )
    with pytest.raises(ValueError, match="side 1"):
        gradcache_step([enc, enc], [x, x], lambda a, b: {"loss": (a**2).sum()}, chunk_size=chunk)
    with pytest.raises(ValueError, match="'loss'"):
        gradcache_step([enc], [x], lambda r: {"total": r.sum()}, chunk_size=chunk)
    frozen = torch.nn.Linear(4, 3).requires_grad_(False)
    with pytest.raises(ValueError, match="without grad"):
        gradcache_step([frozen], [x], lambda r: {"loss": (r**2).sum()}, chunk_size=chunk)


def test_split_batch_shapes_and_errors() -> None:
    t = torch.arange(10).view(5, 2)
    assert [c.tolist() for c in split_batch(t, 2)] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9]]]
    m = {"input_ids": torch.zeros(5, 3), "attention_mask": torch.ones(5, 3)}
    parts = split_batch(m, 4)
    assert [p["input_ids"].shape[0] for p in parts] == [4, 1] and set(parts[0]) == set(m)
    assert split_batch(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    with pytest.raises(ValueError, match="disagree"):
        split_batch({"a": torch.zeros(3), "b": torch.zeros(4)}, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        split_batch(t, 0)
    with pytest.raises(TypeError, match="split_fn"):
        split_batch(object(), 2)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir) -> None:
    teacher = torch.randn(len(TEXTS), 12, generator=torch.Generator().manual_seed(4))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        student = build_student(
            str(tiny_model_dir),
            LoraConfig(r=4, alpha=8, dropout=0.0, init="random"),
            device="cpu",
            gradient_checkpointing=checkpointing,
        )
        assert student.base_model.is_activation_checkpointing == checkpointing
        inputs = student.prepare([Item(text=t) for t in TEXTS]).inputs
        gradcache_step([student.embed], [inputs], lambda s: kd_kl_loss(s, teacher), chunk_size=4)
        grads.append(_grads(student))
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        _close(grads[1][name], grads[0][name], name)
