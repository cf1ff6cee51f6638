"""benchmarks/stage2_curve.py end to end on a tiny model and a small generated corpus: a curve row at each interval
and at the end, and the score-only mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.stage2_curve import main
from uniretrieve.scenes.generate import GenerateConfig, generate

pytestmark = pytest.mark.usefixtures("single_thread")


def test_curve_rows_and_score_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    layouts = ("urban1k", "sugarcrepe", "mmeb-train")
    generate(
        GenerateConfig(out=str(data), seed=0, test_seed=1, train_scenes=24, test_scenes=12, layouts=layouts)
    )
    sets = ["max_steps=4", "batch_size=8", "chunk_size=8", "data.image_size=32", "checkpoint.every_steps=0"]
    sets += ["loss.in_batch_warmup_steps=2", "precision=fp32", "max_text_tokens=64", "log_every=1"]
    args = ["--model", str(tiny_model_dir), "--data", str(data), "--work", str(tmp_path / "run")]
    args += ["--eval-every", "2", "--eval-scenes", "10", "--json-out", str(tmp_path / "c.json")]
    out = main([*args, *(x for s in sets for x in ("--set", s))])
    assert [r["step"] for r in out["curve"]] == [0, 2, 4]
    for r in out["curve"]:
        assert 0 <= r["t2i_r1"] <= 100 and 0 <= r["i2t_r1"] <= 100 and 0 <= r["swap_att"] <= 100
    assert json.loads((tmp_path / "c.json").read_text())["curve"] == out["curve"]
    score = ["--score-only", "--model", str(tmp_path / "run" / "merged"), "--data", str(data)]
    again = main([*score, "--eval-scenes", "10"])
    assert again == {k: out["curve"][-1][k] for k in ("t2i_r1", "i2t_r1", "swap_att")}
