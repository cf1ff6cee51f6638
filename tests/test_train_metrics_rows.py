"""A training run killed before its first checkpoint, then run again, writes each step's metrics row once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import uniretrieve.train.stage1 as stage1
from tests.train_fixtures import stage1_config, write_nli_csv

pytestmark = pytest.mark.usefixtures("single_thread")


class Crash(RuntimeError):
    pass


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_crash_before_first_checkpoint_leaves_no_duplicate_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_nli_csv(tmp_path / "nli.csv", 20)
    cfg = stage1_config(
        tiny_model_dir,
        tmp_path,
        data,
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        **{"checkpoint.every_steps": 3},
    )
    real = stage1.make_step_fn

    def crashing(*args, **kwargs):
        step_fn = real(*args, **kwargs)

        def step(step: int, batch: list[int]):
            if step == 2:
                raise Crash("simulated crash before the first checkpoint")
            return step_fn(step, batch)

        return step

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage1, "make_step_fn", crashing)
        with pytest.raises(Crash):
            stage1.run_stage1(cfg)
    assert steps(tmp_path / "run") == [1, 2]
    stage1.run_stage1(cfg)
    assert steps(tmp_path / "run") == [1, 2, 3, 4]
