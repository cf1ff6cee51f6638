"""The tiny recipe's configs refuse what they do not know: a recipe.json key, a saved run config's key on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from uniretrieve.config import ConfigError
from uniretrieve.models.names import shipped_dir
from uniretrieve.tiny.clip_baseline import ClipBaselineConfig
from uniretrieve.tiny.config import PretrainConfig, TinyRecipeConfig, read_recipe_json
from uniretrieve.train.checkpoint import CHECKPOINTS, STATE_FILE, CheckpointError
from uniretrieve.train.config import save_config
from uniretrieve.train.loop import find_resume


def test_the_shipped_recipe_json_loads() -> None:
    cfg = read_recipe_json(shipped_dir("unime-tiny") / "recipe.json")
    assert isinstance(cfg, TinyRecipeConfig) and cfg.pretrain_steps == PretrainConfig.max_steps


def test_an_unknown_recipe_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"out": "x", "seconds": 3, "pretrain_stepz": 10}))
    with pytest.raises(ConfigError, match=r"recipe.json: unknown key\(s\) pretrain_stepz"):
        read_recipe_json(path)


@pytest.mark.parametrize(
    "cfg",
    [
        PretrainConfig(data="d", output_dir="run"),
        ClipBaselineConfig(data="d", tokenizer="t", output_dir="run"),
    ],
    ids=["pretrain", "clip-baseline"],
)
def test_resume_refuses_a_saved_config_with_an_unknown_key(cfg: Any, tmp_path: Path) -> None:
    cfg.output_dir = str(tmp_path)
    ckpt = tmp_path / CHECKPOINTS / "step-000001"
    ckpt.mkdir(parents=True)
    (ckpt / STATE_FILE).write_text(json.dumps({"step": 1}))
    save_config(cfg, ckpt / "config.yaml")
    assert find_resume(cfg) == ckpt
    with (ckpt / "config.yaml").open("a") as f:
        f.write("no_such_setting: 1\n")
    with pytest.raises(CheckpointError, match="no_such_setting"):
        find_resume(cfg)
