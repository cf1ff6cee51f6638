"""A resume never unpickles: a crafted optimizer/scheduler/RNG file is refused with one line and its code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from uniretrieve.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from uniretrieve.train.config import OptimConfig
from uniretrieve.train.loop import build_scheduler
from uniretrieve.train.trainable import FullModel


class _Payload:
    """Unpickling this runs `touch marker` (what a hostile `scheduler.pt` does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _run(seed: int) -> tuple[FullModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(seed)
    trainable = FullModel(torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=1e-2)
    return trainable, optimizer, build_scheduler(optimizer, OptimConfig(), 10)


def _checkpoint(tmp_path: Path) -> Path:
    trainable, optimizer, scheduler = _run(0)
    trainable.module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return save_checkpoint(
        tmp_path / "run",
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        step=1,
        position={"epoch": 0, "batch_in_epoch": 1},
        config={"seed": 0},
        metrics={"loss": 1.0},
    )


def test_a_checkpoint_this_version_wrote_loads_with_weights_only(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    for name in ("optimizer.pt", "scheduler.pt", "rng-rank0.pt"):
        torch.load(ckpt / name, weights_only=True)  # plain tensors and values only
    trainable, optimizer, scheduler = _run(1)
    state = load_checkpoint(ckpt, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
    assert state["step"] == 1 and scheduler.last_epoch == 1 and optimizer.state


def test_rng_state_round_trips(tmp_path: Path) -> None:
    import random

    import numpy as np

    ckpt = _checkpoint(tmp_path)
    after = (torch.rand(2), random.random(), np.random.rand())
    trainable, optimizer, scheduler = _run(1)
    load_checkpoint(ckpt, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
    again = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(after[0], again[0]) and after[1:] == again[1:]


def test_an_rng_file_written_before_the_tensor_format_still_resumes(tmp_path: Path) -> None:
    import random

    import numpy as np

    ckpt = _checkpoint(tmp_path)
    legacy = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    torch.save(legacy, ckpt / "rng-rank0.pt")
    after = (torch.rand(2), random.random(), np.random.rand())
    trainable, optimizer, scheduler = _run(1)
    load_checkpoint(ckpt, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
    again = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(after[0], again[0]) and after[1:] == again[1:]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", ["scheduler.pt", "optimizer.pt", "rng-rank0.pt"])
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path: Path, name: str, how: str) -> None:
    ckpt = _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    if how == "pickle":
        (ckpt / name).write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state": _Payload(marker), "param_groups": []}, ckpt / name)
    trainable, optimizer, scheduler = _run(1)
    before = [p.detach().clone() for p in trainable.parameters()]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
    message = str(info.value)
    assert "\n" not in message and name in message and "unpickl" in message
    assert not marker.exists()
    assert all(
        torch.equal(a, b) for a, b in zip(before, trainable.parameters(), strict=True)
    )  # nothing half-restored
