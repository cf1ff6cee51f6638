"""`uniretrieve train unime-tiny` end to end on tiny data: every training step lowers its loss, the package holds
the model, its scores and its card, and a rerun resumes from the finished steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniretrieve.tiny.base import FIXTURE
from uniretrieve.tiny.config import TinyRecipeConfig, read_recipe_json
from uniretrieve.train.loop import METRICS_FILE

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 12


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines() if line.strip()]
    return [float(r["loss"]) for r in rows if "loss" in r]


def test_a_short_recipe_run_lowers_every_steps_loss(tmp_path: Path) -> None:
    from uniretrieve.tiny.recipe import run_recipe

    short = [f"max_steps={STEPS}", "batch_size=16", "log_every=1", "optim.warmup_steps=2"]
    cfg = TinyRecipeConfig(
        out=str(tmp_path / "r"),
        train_scenes=64,
        test_scenes=24,
        base=FIXTURE,
        align_steps=STEPS,
        align_batch_size=32,
        align_text_steps=STEPS,
        pretrain_steps=STEPS,
        pretrain_long_steps=STEPS,
        stage1_overrides=[*short, "max_text_tokens=64"],
        stage2_overrides=[*short, "chunk_size=16", "loss.in_batch_warmup_steps=4"],
        eval_batch_size=16,
    )
    model = run_recipe(cfg)
    root = Path(cfg.out)
    for step in ("align", "align-text", "base", "base-long", "stage1", "stage2"):
        losses = _losses(root / step)
        assert len(losses) == STEPS, step
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        assert last < first, (step, losses)
    assert {"model.safetensors", "MODEL_CARD.md", "scores.json", "recipe.json"} <= {
        p.name for p in model.iterdir()
    }
    assert read_recipe_json(model / "recipe.json") == cfg
    scores = json.loads((model / "scores.json").read_text())
    assert {"urban1k", "sharegpt4v", "sugarcrepe", "flickr30k", "mmeb"} <= set(scores)
    times = json.loads((root / "step_seconds.json").read_text())
    assert set(times) >= {
        "data",
        "align",
        "align_text",
        "pretrain",
        "pretrain_long",
        "stage1",
        "stage2",
        "eval",
    }
    for phase in (
        "base",
        "base-long",
    ):  # both pretraining phases held the caption alignment beside their loss
        rows = [json.loads(x) for x in (root / phase / METRICS_FILE).read_text().splitlines() if x.strip()]
        assert all("align_loss" in r for r in rows), phase


def test_the_recipe_stops_after_the_step_asked_for_with_its_config_saved_first(tmp_path: Path) -> None:
    from uniretrieve.tiny.recipe import run_recipe

    cfg = TinyRecipeConfig(out=str(tmp_path / "r"), train_scenes=16, test_scenes=8, base=FIXTURE)
    with pytest.raises(ValueError, match="unknown recipe step 'stage3'"):
        run_recipe(cfg, until="stage3")
    data = run_recipe(cfg, until="data")
    root = Path(cfg.out)
    assert data == root / "data" and (data / "config.json").exists()
    assert read_recipe_json(root / "recipe.json") == cfg
    assert set(json.loads((root / "step_seconds.json").read_text())) == {"data"}
    assert sorted(p.name for p in root.iterdir()) == ["data", "recipe.json", "step_seconds.json"]
