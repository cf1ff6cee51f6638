"""Two CPU processes (gloo, torchrun environment) train exactly like one process on the same global batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train_fixtures import (
    all_reduce_worker,
    ddp_stage_worker,
    spawn_ranks,
    stage1_config,
    write_nli_csv,
)
from uniretrieve.train.config import config_to_dict
from uniretrieve.train.stage1 import run_stage1

pytestmark = pytest.mark.usefixtures("single_thread")


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_process_stage1_matches_single_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_nli_csv(tmp_path / "nli.csv", 16)
    # Dropout off: with it each rank draws its own masks (seed + rank), which one process cannot reproduce.
    common = {"max_steps": 3, "lora.dropout": 0.0, "lora.init": "random", "checkpoint.every_steps": 2}
    single = stage1_config(tiny_model_dir, tmp_path, data, output_dir=str(tmp_path / "one"), **common)
    run_stage1(single)  # also fills the teacher cache the ranks then read

    double = stage1_config(tiny_model_dir, tmp_path, data, output_dir=str(tmp_path / "two"), **common)
    spawn_ranks(ddp_stage_worker, "stage1", config_to_dict(double))

    one, two = tmp_path / "one", tmp_path / "two"
    # Step 1: same weights, same global batch → same global KD loss; later steps: same gradients → same updates.
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)
    a = load_file(str(one / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(two / "adapter" / "adapter_model.safetensors"))
    init = load_file(str(one / "checkpoints" / "step-000002" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    assert any(not torch.equal(a[k], init[k]) for k in a)  # step 3 moved the weights
    state = json.loads((two / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert (two / "checkpoints" / "step-000002" / "rng-rank1.pt").is_file()


def test_gradient_average_and_broadcast_across_two_processes(tmp_path: Path) -> None:
    spawn_ranks(all_reduce_worker, str(tmp_path))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        a, b, c = got["values"]
        assert torch.equal(c, torch.full((3,), 20.0))
        assert torch.equal(a, torch.zeros(3)) and torch.equal(b, torch.full((3,), 10.0))  # rank 0's values
        ga, gb, gc = got["grads"]
        assert torch.equal(ga, torch.full((3,), 2.0))  # (1 + 3) / 2: DDP's average
        assert torch.equal(gb, torch.full((3,), 1.0))  # used on one rank only: (0 + 2) / 2
        assert gc is None  # used on no rank: AdamW must skip it, as in one process
