"""Training checkpoints under kills: `train stage1` killed before any filesystem step of its run (checkpoint
writes and pruning, the metrics file, the adapter export), followed by the same command, ends with what an
uninterrupted run ends with — the same adapter weights, the same per-step losses, one checkpoint kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.numpy import load_file

from tests.faults import KILLED, run_cli, sweep_cli
from tests.train_fixtures import cli_sets, write_nli_csv


def stage1_args(model: Path, data: Path, out: Path, teacher_cache: Path) -> list[str]:
    return [
        "train",
        "stage1",
        "-c",
        "stage1-tiny",
        "--model",
        str(model),
        "--data",
        str(data),
        "-o",
        str(out),
        "--max-steps",
        "2",
        "--no-merge",
        *cli_sets(
            "batch_size=8",
            "chunk_size=8",
            "checkpoint.every_steps=1",
            "checkpoint.keep_last=1",
            f"teacher.cache_dir={teacher_cache}",
        ),
    ]


def snapshot(run: Path) -> dict[str, Any]:
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "adapter": {k: v.tobytes() for k, v in sorted(adapter.items())},
        "losses": [(r["step"], r["loss"]) for r in rows],
        "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
        "files": sorted(p.name for p in run.iterdir()),
    }


def test_kill_at_every_step_of_stage1_checkpointing(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_nli_csv(tmp_path / "nli.csv", 16)
    teacher = tmp_path / "teacher"
    # fill the teacher cache once, so the sweep's steps are the run's own (checkpoints, metrics, adapter)
    first = run_cli(stage1_args(tiny_model_dir, data, tmp_path / "warm", teacher), timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    work = tmp_path / "run"
    out = tmp_path / "sweep"
    out.mkdir()
    res = sweep_cli("-", str(work), out, stage1_args(tiny_model_dir, data, work, teacher), timeout=1200)
    assert res["ref"] == 0, res["ref_output"]
    expected, steps = snapshot(out / "ref"), res["steps"]
    assert steps >= 6 and len(res["runs"]) == steps
    for run in res["runs"]:
        n = run["step"]
        assert run["killed"] == KILLED and run["rerun"] == 0, run
        assert snapshot(out / f"kill{n}") == expected, f"kill before step {n} of {steps}"
