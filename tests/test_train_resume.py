"""Exact resume: an interrupted and resumed run reproduces the uninterrupted run; schedule and data order."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import uniretrieve.train.stage1 as stage1
from tests.train_fixtures import (
    stage1_config,
    write_nli_csv,
)
from uniretrieve.train.batching import GroupedEpochs, ShuffledEpochs, local_slice
from uniretrieve.train.checkpoint import CheckpointError
from uniretrieve.train.config import OptimConfig
from uniretrieve.train.loop import lr_factor

pytestmark = pytest.mark.usefixtures("single_thread")


class Crash(RuntimeError):
    pass


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def test_resumed_run_reproduces_the_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_nli_csv(tmp_path / "nli.csv", 20)
    # LoRA dropout > 0 makes every step consume the RNG: the resume must restore it, not only the weights.
    common = {"max_steps": 6, "checkpoint.every_steps": 2, "checkpoint.keep_last": 2, "lora.dropout": 0.2}
    straight = stage1_config(tiny_model_dir, tmp_path, data, output_dir=str(tmp_path / "straight"), **common)
    stage1.run_stage1(straight)

    cfg = stage1_config(tiny_model_dir, tmp_path, data, output_dir=str(tmp_path / "broken"), **common)
    real = stage1.make_step_fn

    def crashing(*args, **kwargs):
        step_fn = real(*args, **kwargs)

        def step(step: int, batch: list[int]):
            if step == 3:  # after the step-2 checkpoint and the logged step 3: the crash loses step 3
                raise Crash("simulated crash")
            return step_fn(step, batch)

        return step

    mp = pytest.MonkeyPatch()
    mp.setattr(stage1, "make_step_fn", crashing)
    try:
        with pytest.raises(Crash):
            stage1.run_stage1(cfg)
    finally:
        mp.undo()
    broken = tmp_path / "broken"
    assert [s for s, _ in _losses(broken)] == [1, 2, 3]
    result = stage1.run_stage1(cfg)  # resume="auto": continues from checkpoints/step-000002

    assert _losses(broken) == _losses(tmp_path / "straight")  # same steps, bit-identical losses
    assert len({loss for _, loss in _losses(broken)}) == 6  # the losses do change from step to step
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(Path(result.adapter_dir) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kept = sorted(p.name for p in (broken / "checkpoints").iterdir())
    assert kept == ["step-000004", "step-000006"]  # keep_last=2
    state = json.loads((broken / "checkpoints" / "step-000006" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["position"] == {
        "epoch": 1,
        "batch_in_epoch": 1,
    }  # 5 batches per epoch

    # A changed trajectory setting is refused; a fresh start in a used directory is refused.
    changed = stage1_config(
        tiny_model_dir, tmp_path, data, output_dir=str(broken), **{**common, "optim.lr": 1e-2}
    )
    with pytest.raises(CheckpointError, match="optim"):
        stage1.run_stage1(changed)
    never = stage1_config(
        tiny_model_dir, tmp_path, data, output_dir=str(broken), **{**common, "checkpoint.resume": "never"}
    )
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        stage1.run_stage1(never)


def test_lr_schedule_warmup_then_decay() -> None:
    cos = OptimConfig(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    values = [lr_factor(s, 14, cos) for s in range(14)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[-1] == pytest.approx(0.1)
    assert values[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(a >= b for a, b in itertools.pairwise(values[3:]))
    lin = OptimConfig(lr=1.0, warmup_steps=0, schedule="linear")
    assert [lr_factor(s, 5, lin) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    const = OptimConfig(lr=1.0, warmup_steps=2, schedule="constant")
    assert [lr_factor(s, 5, const) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_data_order_is_a_function_of_seed_and_step() -> None:
    plan = ShuffledEpochs(10, 3, seed=5)
    assert plan.steps_per_epoch == 3  # drop_last: the tenth example waits for another epoch's order
    epoch0 = [plan.global_batch(s) for s in range(3)]
    flat = [i for b in epoch0 for i in b]
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    again = ShuffledEpochs(10, 3, seed=5)
    assert [again.global_batch(s) for s in (4, 0, 2)] == [plan.global_batch(4), epoch0[0], epoch0[2]]
    assert [plan.global_batch(s) for s in range(3, 6)] != epoch0  # a new order each epoch
    assert ShuffledEpochs(10, 3, seed=6).global_batch(0) != epoch0[0]
    assert plan.position(7) == {"epoch": 2, "batch_in_epoch": 1}
    tail = ShuffledEpochs(10, 3, seed=5, drop_last=False)
    assert tail.steps_per_epoch == 4 and len(tail.global_batch(3)) == 3
    assert len(set(i for s in range(4) for i in tail.global_batch(s))) == 10
    assert local_slice([4, 5, 6]) == [4, 5, 6]  # single process: the whole batch
    with pytest.raises(ValueError, match="fewer than one batch"):
        ShuffledEpochs(2, 3, seed=0)


def test_grouped_epochs_fill_each_batch_from_one_group_and_see_each_example_once() -> None:
    groups = (
        [0] * 50 + [1] * 33 + [2] * 7
    )  # group 2 never fills a batch of 8: its rows wait (tails are dropped)
    plan = GroupedEpochs(groups, 8, seed=1)
    assert plan.steps_per_epoch == 6 + 4
    for epoch in range(2):
        batches = [plan.global_batch(epoch * plan.steps_per_epoch + b) for b in range(plan.steps_per_epoch)]
        assert all(len({groups[i] for i in b}) == 1 for b in batches)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen)) == 80
        assert [groups[b[0]] for b in batches] != sorted(groups[b[0]] for b in batches)  # groups interleave
    assert GroupedEpochs(groups, 8, seed=1).global_batch(13) == plan.global_batch(
        13
    )  # a function of seed, step
    with pytest.raises(ValueError, match="no group holds a full batch"):
        GroupedEpochs([0, 1, 2], 2, seed=0)
