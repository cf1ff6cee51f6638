"""Helpers for the training tests: small NLI-style data files, tiny stage-1 configs and students.

Plain functions (not fixtures) so any test module can use them with the shared fixtures of conftest.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUBJECTS = [
    "a red circle",
    "two green triangles",
    "a yellow star",
    "the quick brown fox",
    "a blue square",
    "a dog",
]
PLACES = [
    "above the table",
    "next to a house",
    "in the park",
    "under the bridge",
    "on a hill",
    "near the sea",
]


def nli_rows(n: int) -> list[dict[str, str]]:
    """Deterministic SimCSE-like rows: an entailment pair and a contradicting hard negative."""
    rows = []
    for i in range(n):
        s, p = SUBJECTS[i % len(SUBJECTS)], PLACES[(i // len(SUBJECTS)) % len(PLACES)]
        rows.append(
            {
                "sent0": f"{s} {p} number {i}",
                "sent1": f"there is {s} {p}, item {i}",
                "hard_neg": f"nothing is {p} at all {i}",
            }
        )
    return rows


def write_nli_csv(path: Path, n: int = 24) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["sent0", "sent1", "hard_neg"])
        w.writeheader()
        w.writerows(nli_rows(n))
    return path


def write_nli_jsonl(path: Path, n: int = 24) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in nli_rows(n)), encoding="utf-8")
    return path


def stage1_config(model_dir: Path, tmp: Path, data: Path, **overrides: Any) -> Any:
    """A small stage-1 config on the tiny model and the packaged MiniLM teacher (cache under `tmp`)."""
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage1 import Stage1Config

    values: dict[str, Any] = {
        "model": str(model_dir),
        "output_dir": str(tmp / "run"),
        "data.path": str(data),
        "teacher.cache_dir": str(tmp / "teacher-cache"),
        "batch_size": 8,
        "chunk_size": 3,
        "log_every": 100,
        "checkpoint.merge": False,
        "precision": "fp32",  # exact comparisons (ranks, chunks, resume); the preset's bf16 autocast rounds
    }
    values.update(overrides)
    sets = ["epochs=null"] if "max_steps" in values else []
    return load_config(Stage1Config, "stage1-tiny", sets, **values)


def cli_sets(*overrides: str) -> list[str]:
    """`--set a=1 --set b=2 …` for the train commands."""
    return [arg for o in overrides for arg in ("--set", o)]


def lora_state(student: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in student.trainable_parameters()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_ranks(worker: Callable[..., None], *args: Any, world: int = 2) -> None:
    """Run `worker(rank, world, port, *args)` in `world` fresh processes (torch.multiprocessing, spawn)."""
    import torch.multiprocessing as mp

    mp.start_processes(
        worker, args=(world, free_port(), *args), nprocs=world, join=True, start_method="spawn"
    )


def _rank_env(rank: int, world: int, port: int, **extra: str) -> None:
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **extra
    )


def ddp_stage_worker(rank: int, world: int, port: int, stage: str, cfg_dict: dict[str, Any]) -> None:
    """One torchrun-like rank of a `stage` ("stage1" or "stage2") run (spawned by `spawn_ranks`; gloo on CPU)."""
    import torch
    import torch.distributed as dist

    _rank_env(rank, world, port, LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from uniretrieve.train.config import config_from_dict
    from uniretrieve.train.stage1 import Stage1Config, run_stage1
    from uniretrieve.train.stage2 import Stage2Config, run_stage2

    config_cls, run = {"stage1": (Stage1Config, run_stage1), "stage2": (Stage2Config, run_stage2)}[stage]
    try:
        run(config_from_dict(config_cls, cfg_dict))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank r gives param a the gradient 2r+1, param b a gradient only on rank 1, param c none; saves the result."""
    import torch
    import torch.distributed as dist

    _rank_env(rank, world, port)
    from uniretrieve.train.distributed import all_reduce_gradients, broadcast_parameters, init_distributed

    init_distributed()
    try:
        a, b, c = (torch.nn.Parameter(torch.full((3,), float(rank + 10 * i))) for i in range(3))
        broadcast_parameters([a, b, c])
        a.grad = torch.full((3,), 2.0 * rank + 1)
        if rank == 1:
            b.grad = torch.full((3,), 2.0)
        all_reduce_gradients([a, b, c])
        torch.save(
            {"values": [a.data, b.data, c.data], "grads": [a.grad, b.grad, c.grad]}, f"{out}/rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()
