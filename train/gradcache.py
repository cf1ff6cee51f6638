"""GradCache: the exact full-batch contrastive gradient with memory bounded by a chunk.

Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"
(arXiv 2101.06983). A contrastive loss couples every item of the batch, so gradient accumulation over micro-batches
changes the loss (fewer negatives). GradCache splits the backward pass at the representations instead:

1. representation pass: embed every chunk under ``torch.no_grad`` (no activations kept) and concatenate;
2. loss pass: make the concatenated representations leaf tensors, compute the loss on the *full* batch and
   backpropagate to them, which caches d loss / d reps (cheap: the reps are [n, d]);
3. chunk backward: re-embed each chunk with gradients and call ``reps_chunk.backward(cached_grad_chunk)``.
   Parameter gradients accumulate to exactly those of the full-batch backward, by the chain rule.

The second forward must reproduce the first bit for bit, so the RNG state (dropout, e.g. LoRA dropout) is recorded
before each chunk's first forward and replayed for its second (CPU and, when initialised, all CUDA devices).
UniME uses GradCache for its 1024 global batch in stage 2 (UniME paper Table 6;
docs/method.md#gradcache-and-gathering); VLM2Vec and sentence-transformers'
CachedMultipleNegativesRankingLoss implement the same idea.

Distributed use: ``loss_fn`` receives the *local* representations and gathers them itself with
``gather_with_grad`` (train/distributed.py), so the cached gradient is that of the global loss w.r.t. the local
rows; pass ``loss_scale=ddp_loss_scale()`` and ``no_sync=ddp_model.no_sync`` so DDP all-reduces once, after the
last chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

EmbedFn = Callable[[Any], torch.Tensor]
SplitFn = Callable[[Any, int], Sequence[Any]]


def _num_rows(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, Mapping):
        sizes = {key: _num_rows(value) for key, value in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"split_batch: mapping fields disagree on the batch size: {sizes}")
        return next(iter(sizes.values()))
    if isinstance(batch, (list, tuple)):
        return len(batch)
    raise TypeError(
        f"split_batch cannot split a {type(batch).__name__}; pass a split_fn to gradcache_step, or give the side "
        "as a tensor, a mapping of tensors, or a list of items"
    )


def split_batch(batch: Any, chunk_size: int) -> list[Any]:
    """Split one side's batch into consecutive chunks of at most ``chunk_size`` rows, preserving order.

    Supports a tensor (split on dim 0), a mapping whose values are splittable and agree on the batch size
    (e.g. a tokenizer output), and a list/tuple of items (e.g. ``Item`` records for an ``embed_fn`` that builds
    its own model inputs). Anything else needs a custom ``split_fn``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    n = _num_rows(batch)
    if n == 0:
        raise ValueError("split_batch: empty batch")
    return [_slice(batch, start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    return batch[start:stop]


_NO_GRAD_MSG = (
    "GradCache: {sides} received no gradient from the loss; the loss ignores it, or a cross-rank gather dropped "
    "the autograd graph (use train.distributed.gather_with_grad)"
)


class _RngState:
    """RNG state captured before a chunk's no-grad forward, replayed for its grad forward."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        # Only capture CUDA when it is already initialised (it is whenever the model lives on a GPU); capturing
        # would otherwise initialise CUDA for a CPU-only run.
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        # fork_rng restores the outer state afterwards: the replay must not rewind the global RNG stream.
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def gradcache_step(
    embed_fns: Sequence[EmbedFn],
    inputs: Sequence[Any],
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    *,
    chunk_size: int,
    split_fn: SplitFn = split_batch,
    loss_scale: float = 1.0,
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """Accumulate into ``.grad`` the parameter gradients of ``loss_fn`` over the full batch, chunk by chunk.

    Args:
        embed_fns: one callable per input side, ``chunk -> reps [c, d]`` (e.g. ``encoder.embed`` of an ``Encoder.build``);
            the same callable may serve several sides (UniME embeds queries and targets with one model). Must be
            deterministic given the RNG state, and its output must require grad when gradients are enabled.
        inputs: one full (local) batch per side, in the order ``loss_fn`` takes the representations.
            Stage 2: ``[queries, targets]``. Stage 1: ``[student_texts]`` with the teacher tensor closed over in
            ``loss_fn``, e.g. ``lambda s: kd_kl_loss(s, teacher)``.
        loss_fn: ``(*reps) -> dict`` with a scalar ``"loss"``; receives one [n_side, d] tensor per side,
            concatenated in input order. Under DDP it gathers them itself (``gather_with_grad``).
        chunk_size: rows per forward pass; only bounds memory, the gradient does not depend on it.
        split_fn: ``(side_batch, chunk_size) -> chunks``; default ``split_batch``.
        loss_scale: multiplies the loss before the backward pass (``ddp_loss_scale()`` under DDP); the returned
            values are unscaled.
        no_sync: e.g. ``ddp_model.no_sync``: entered for every chunk's grad forward/backward except the very last,
            so DDP all-reduces the accumulated gradients once.

    Returns:
        ``loss_fn``'s dict, detached. Parameter gradients are *accumulated* (zero them before, step after).

    Raises:
        ValueError: a side's representations receive no gradient from the loss (the loss ignores that side, or a
            gather dropped the autograd graph, as the official UniME gather does), or an ``embed_fn`` returns a
            tensor that does not require grad in the grad pass (e.g. all parameters frozen).
    """
    if len(embed_fns) != len(inputs):
        raise ValueError(f"got {len(embed_fns)} embed_fns for {len(inputs)} input sides; pass one per side")
    if not inputs:
        raise ValueError("gradcache_step needs at least one input side")
    chunks = [list(split_fn(side, chunk_size)) for side in inputs]
    if all(len(c) == 1 for c in chunks):
        return _single_pass(embed_fns, [c[0] for c in chunks], loss_fn, loss_scale)

    # 1. Representation pass: no activations kept; remember each chunk's RNG state for the replay.
    states: list[list[_RngState]] = []
    cached: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for fn, side_chunks in zip(embed_fns, chunks, strict=True):
            side_states, side_reps = [], []
            for chunk in side_chunks:
                side_states.append(_RngState())
                side_reps.append(fn(chunk).detach())
            states.append(side_states)
            cached.append(side_reps)

    # 2. Loss pass on the full batch: d loss / d reps per side.
    reps = [torch.cat(side_reps).requires_grad_(True) for side_reps in cached]
    out = dict(loss_fn(*reps))
    loss = _checked_loss(out)
    (loss * loss_scale).backward()
    grads: list[torch.Tensor] = []
    for side, r in enumerate(reps):
        if r.grad is None:
            raise ValueError(_NO_GRAD_MSG.format(sides=f"side {side}"))
        grads.append(r.grad)
    del reps, loss

    # 3. Chunk backward with the same RNG as in pass 1, accumulating parameter gradients.
    jobs = [(side, c) for side in range(len(chunks)) for c in range(len(chunks[side]))]
    for position, (side, c) in enumerate(jobs):
        last = position == len(jobs) - 1
        sync_ctx = no_sync() if no_sync is not None and not last else contextlib.nullcontext()
        with sync_ctx:
            with states[side][c].replay():
                chunk_reps = embed_fns[side](chunks[side][c])
            if not chunk_reps.requires_grad:
                raise ValueError(
                    f"GradCache: embed_fns[{side}] returned a tensor without grad; nothing to train on that side"
                )
            expected = cached[side][c].shape
            if chunk_reps.shape != expected:
                raise ValueError(
                    f"GradCache: embed_fns[{side}] returned shape {tuple(chunk_reps.shape)} for chunk {c} in the "
                    f"grad pass but {tuple(expected)} in the no-grad pass; embed_fn must be deterministic"
                )
            start = sum(r.shape[0] for r in cached[side][:c])
            chunk_reps.backward(grads[side][start : start + chunk_reps.shape[0]])

    return {name: value.detach() for name, value in out.items()}


def _checked_loss(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`loss_fn`'s scalar "loss", refused when missing, not a scalar, or without a graph."""
    if "loss" not in out:
        raise ValueError(f"loss_fn must return a dict with a 'loss' entry; got keys {sorted(out)}")
    loss = out["loss"]
    if loss.dim() != 0:
        raise ValueError(f"loss_fn's 'loss' must be a scalar; got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError(_NO_GRAD_MSG.format(sides="every side"))
    return loss


def _single_pass(
    embed_fns: Sequence[EmbedFn],
    inputs: Sequence[Any],
    loss_fn: Callable[..., Mapping[str, torch.Tensor]],
    loss_scale: float,
) -> dict[str, torch.Tensor]:
    """Every side fits in one chunk: the plain step (one forward with activations kept, one backward). Same
    gradient as the three passes, without the representation pass's extra forward (a quarter of the compute)."""
    reps = []
    for side, (fn, batch) in enumerate(zip(embed_fns, inputs, strict=True)):
        r = fn(batch)
        if not r.requires_grad:
            raise ValueError(
                f"GradCache: embed_fns[{side}] returned a tensor without grad; nothing to train on that side"
            )
        r.retain_grad()  # to tell a side the loss ignores, as the three passes do
        reps.append(r)
    out = dict(loss_fn(*reps))
    loss = _checked_loss(out)
    (loss * loss_scale).backward()
    for side, r in enumerate(reps):
        if r.grad is None:
            raise ValueError(_NO_GRAD_MSG.format(sides=f"side {side}"))
    return {name: value.detach() for name, value in out.items()}
