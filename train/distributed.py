"""Cross-rank gathering with explicit gradient semantics, and the matching loss scale.

Contrastive losses in UniME are computed over the *global* batch: every rank gathers the query and target
representations of all ranks and computes the same loss over all of them (stage 2 draws its k=8 hard negatives
from the global batch of 1024; UniME paper Table 5, HardNeg% = k/1024; docs/method.md#gradcache-and-gathering).

Gradient semantics (why `gather_with_grad` and `ddp_loss_scale` exist)
----------------------------------------------------------------------
Let the global batch be split over W ranks; rank r holds local representations z_r = f_θ(x_r). Every rank
computes the same scalar L(z_1, ..., z_W). The single-process gradient of L over the whole batch is

    g = dL/dθ = Σ_r (∂L/∂z_r) · (∂z_r/∂θ) = Σ_r g_r.

`gather_with_grad` returns the concatenation [z_1, ..., z_W] in which the *local* slot is the live tensor z_r
(with its autograd graph) and the other slots are received copies without graph. Backpropagating L on rank r
therefore yields exactly g_r: the exact gradient of the global loss through the local representations, nothing
through the others (they are on other ranks' graphs). DDP then *averages* parameter gradients over ranks:

    DDP grad = (1/W) Σ_r g_r = g / W.

Hence the loss that each rank backpropagates must be scaled by W (`ddp_loss_scale()`), giving Σ_r g_r = g, the
single-process gradient. The official UniME `DistributedContrastiveLossBatchRank` multiplies by world_size, which is
this same factor, but its gather never restores the local slot, so its gathered tensors carry no graph at all and
no gradient reaches the model (deepglint/UniME loss.py `_gather_tensor`;
docs/benchmarks.md#official-release-defects). If gradients are
reduced with a SUM all-reduce instead of DDP's average, the scale is 1. The reported (logged) loss must be the
unscaled value.

Everything here is the identity on a single process (no process group initialised).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised (and the backend is available)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def ddp_loss_scale() -> float:
    """Factor to multiply a global-batch loss by before `backward()` when DDP averages gradients over ranks.

    See the module docstring for the derivation: DDP's average divides the sum of the per-rank partial gradients
    by W, so the loss is scaled by W. Returns 1.0 when not distributed.
    """
    return float(world_size())


def _check_equal_rows(t: torch.Tensor, ws: int) -> None:
    """all_gather needs identical shapes on every rank; fail with a clear message instead of hanging or garbling."""
    local = torch.tensor(list(t.shape), dtype=torch.long, device=t.device)
    shapes = [torch.empty_like(local) for _ in range(ws)]
    dist.all_gather(shapes, local)
    if any(not torch.equal(s, local) for s in shapes):
        seen = {r: tuple(s.tolist()) for r, s in enumerate(shapes)}
        raise ValueError(
            f"gather_with_grad: ranks hold tensors of different shapes {seen}; every rank must contribute the "
            "same local batch size (use drop_last=True in the DataLoader or pad the last batch)."
        )


def gather_with_grad(t: torch.Tensor, *, check_shapes: bool = True) -> torch.Tensor:
    """Concatenate `t` from all ranks along dim 0, keeping the autograd graph of the local slot.

    Args:
        t: local tensor [b, ...]; every rank must pass the same shape, dtype and device.
        check_shapes: verify with one small extra collective that all ranks agree on the shape (default on;
            the cost is negligible next to gathering the embeddings).

    Returns:
        [W·b, ...] in rank order (rows r·b .. (r+1)·b−1 come from rank r). Rows of this rank are `t` itself,
        so gradients of any loss on the result flow into `t`; rows of other ranks are constants. Returns `t`
        unchanged when not distributed or W == 1. Backpropagate `loss * ddp_loss_scale()` under DDP.
    """
    if not is_distributed():
        return t
    ws = dist.get_world_size()
    if ws == 1:
        return t
    if check_shapes:
        _check_equal_rows(t, ws)
    received = [torch.empty_like(t) for _ in range(ws)]
    dist.all_gather(received, t.detach().contiguous())
    # The fix for the official defect: put the live local tensor back so its graph survives the gather.
    received[dist.get_rank()] = t
    return torch.cat(received, dim=0)


def is_main() -> bool:
    """True on rank 0 (the rank that logs and writes shared files) and in a single process."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if is_distributed() and dist.get_world_size() > 1:
        dist.barrier()


def init_distributed() -> None:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR ...).

    A no-op in a plain single-process run or when a group already exists. NCCL when CUDA is present, gloo otherwise;
    each rank's CUDA device is its LOCAL_RANK's (`uniretrieve.models.device.resolve_device`).
    """
    import os

    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    # Long default timeout: stage 1 has rank 0 extract the teacher embeddings while the other ranks wait in a
    # barrier (tens of minutes for NV-Embed-v2 on the full NLI set); torch's default would abort them.
    from datetime import timedelta

    timeout = timedelta(minutes=float(os.environ.get("UNIRETRIEVE_DIST_TIMEOUT_MIN", "180")))
    if torch.cuda.is_available():
        from uniretrieve.models.device import resolve_device

        torch.cuda.set_device(resolve_device())
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average `.grad` over ranks, as DDP would, in one flat all-reduce per dtype/device.

    Used instead of a DDP wrapper: GradCache runs several backward passes per step, and LoRA parameters may go
    unused in a step (vision adapters on text-only batches); a single reduction after the step handles both.
    Parameters without a gradient on this rank contribute zeros, so ranks never disagree on the buffer layout;
    a parameter without a gradient on every rank keeps `grad=None`.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return
    ws = dist.get_world_size()
    groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for group in groups.values():
        # The last len(group) entries count the ranks that produced each gradient: a parameter no rank used keeps
        # grad None, so AdamW skips it exactly as in a single process (instead of stepping on a zero gradient).
        used = torch.tensor(
            [float(p.grad is not None) for p in group], dtype=group[0].dtype, device=group[0].device
        )
        flat = torch.cat(
            [*((p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group), used]
        )
        dist.all_reduce(flat)
        offset = 0
        for i, p in enumerate(group):
            n = p.numel()
            if flat[-len(group) + i] > 0:
                p.grad = (flat[offset : offset + n] / ws).view_as(p).clone()
            offset += n


def broadcast_parameters(params: list[torch.nn.Parameter], src: int = 0) -> None:
    """Copy rank `src`'s parameter values to every rank (as DDP does at construction), so ranks whose random LoRA
    init differed (each rank seeds with seed + rank for distinct dropout masks) start from the same weights."""
    if not is_distributed() or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src)


def shutdown() -> None:
    """Leave the process group (end of a torchrun command); a no-op when none exists."""
    if is_distributed():
        dist.destroy_process_group()
