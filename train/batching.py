"""Which examples form the global batch of each step: a pure function of (seed, step).

Because the order depends on nothing but the seed and the step number, the saved step *is* the data position:
a resumed run sees exactly the batches the uninterrupted run would have seen, with no sampler or iterator state
to save (each epoch's order is regenerated from `seed + epoch`).

Under torchrun every rank computes the same global batch and takes its own contiguous slice (`local_slice`), in
rank order, which is the order in which `gather_with_grad` concatenates the ranks' embeddings; so row i of the
gathered matrix is example `global_batch[i]` on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import torch

from uniretrieve.train.distributed import rank, world_size

T = TypeVar("T")


class BatchPlan(Protocol):
    """A deterministic schedule of global batches (stage 2 may implement its own, e.g. weighted subsets)."""

    steps_per_epoch: int

    def global_batch(self, step: int) -> list[int]:
        """Example indices of the global batch at 0-based optimizer step `step`."""
        ...

    def position(self, step: int) -> dict[str, int]:
        """Where `step` lies in the data, for logs and trainer_state.json (e.g. epoch, batch in epoch)."""
        ...


class ShuffledEpochs:
    """Epochs over `num_examples` examples, each in a fresh random order; `batch_size` examples per step.

    drop_last=True (the default) drops the incomplete tail of every epoch, so every step has the full batch (the
    loss matrix size, and the per-rank slice size under torchrun, stay constant). With drop_last=False the tail
    batch is completed with the first examples of the same epoch's order (never a short batch).
    """

    def __init__(self, num_examples: int, batch_size: int, *, seed: int, drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if num_examples < batch_size:
            raise ValueError(
                f"the data has {num_examples} examples, fewer than one batch of {batch_size}; lower batch_size or "
                "add data"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        full, rest = divmod(num_examples, batch_size)
        self.steps_per_epoch = full + (1 if rest and not drop_last else 0)
        self._cache: tuple[int, torch.Tensor] | None = None

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.num_examples, generator=g))
        return self._cache[1]

    def global_batch(self, step: int) -> list[int]:
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        epoch, b = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        idx = order[b * self.batch_size : (b + 1) * self.batch_size]
        if len(idx) < self.batch_size:  # drop_last=False tail: wrap around within this epoch's order
            idx = torch.cat([idx, order[: self.batch_size - len(idx)]])
        return idx.tolist()

    def position(self, step: int) -> dict[str, int]:
        epoch, b = divmod(step, self.steps_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": b}


class GroupedEpochs(ShuffledEpochs):
    """ShuffledEpochs whose every batch holds examples of one group only (e.g. one MMEB-train subset).

    With mixed batches most in-batch negatives belong to other tasks and are told apart by their format alone (a
    class label vs a caption vs an image); a batch from one task makes every negative a same-task candidate, as the
    evaluation's candidate lists are. Each epoch shuffles each group, cuts it into full batches (a group's tail
    is dropped) and shuffles the batches of all groups together: a pure function of (seed, epoch).
    """

    def __init__(self, groups: Sequence[int], batch_size: int, *, seed: int) -> None:
        super().__init__(len(groups), batch_size, seed=seed)
        self.groups = torch.as_tensor(list(groups), dtype=torch.long)
        self.steps_per_epoch = int((torch.bincount(self.groups) // batch_size).sum())
        if self.steps_per_epoch == 0:
            raise ValueError(f"no group holds a full batch of {batch_size}; lower batch_size or add data")

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.num_examples, generator=g)
            batches = []
            for gid in torch.unique(self.groups).tolist():
                members = perm[self.groups[perm] == gid]
                full = len(members) // self.batch_size
                batches.append(members[: full * self.batch_size].view(full, self.batch_size))
            stacked = torch.cat(batches)
            self._cache = (epoch, stacked[torch.randperm(len(stacked), generator=g)].reshape(-1))
        return self._cache[1]


def local_slice(global_batch: Sequence[T]) -> list[T]:
    """This rank's contiguous share of the global batch (the whole batch in a single process)."""
    ws, r = world_size(), rank()
    if len(global_batch) % ws:
        raise ValueError(
            f"the global batch of {len(global_batch)} does not split evenly over {ws} ranks; choose batch_size "
            "divisible by the number of processes"
        )
    per = len(global_batch) // ws
    return list(global_batch[r * per : (r + 1) * per])
