"""The GPU check's CPU paths: each step writes its record into the one JSON file, a failing step is recorded
without losing the others, and the exact-search rows compare the device path with the CPU's on the same data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check


def test_steps_merge_into_one_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gpu.json"
    monkeypatch.setattr(gpu_check, "SMOKE_SIZES", ((3000, 32),))
    gpu_check.main(["--step", "env", "--cpu-smoke", "--out", str(out)])
    gpu_check.main(["--step", "exact", "--cpu-smoke", "--out", str(out)])
    steps = json.loads(out.read_text())["steps"]
    assert steps["env"]["torch"] and "faiss" in steps["env"] and steps["env"]["cpu_smoke"] is True
    (row,) = steps["exact"]["rows"]
    assert (row["n"], row["dim"], row["queries"]) == (3000, 32, 1000)
    assert row["gpu_recall@10_vs_cpu_fp32"] == 1.0  # on the CPU the "device" path is float32 too: identical
    assert row["gpu_qps_batch"] > 0 and row["cpu_torch_qps_batch"] > 0 and row["gpu_ms_single"] > 0

    def broken(smoke: bool) -> dict:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_check, "exact_step", broken)
    gpu_check.main(["--step", "exact", "--cpu-smoke", "--out", str(out)])
    steps = json.loads(out.read_text())["steps"]
    assert steps["exact"]["error"] == "RuntimeError: CUDA out of memory" and "torch" in steps["env"]


def test_shell_script_parses() -> None:
    script = Path(gpu_check.__file__).with_name("gpu_check.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--step" in script.read_text() and all(f"step {s} " in script.read_text() for s in gpu_check.STEPS)
