"""Typed training configs: YAML + overrides, refusal of bad keys/types, the resolved config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniretrieve.train.config import (
    ConfigError,
    TrainConfig,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from uniretrieve.train.stage1 import Stage1Config

REQUIRED = {"model": "m", "output_dir": "o", "batch_size": 8, "chunk_size": 4, "max_steps": 3}


def test_priority_yaml_then_overrides_then_values(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "model: from-yaml\noutput_dir: o\nbatch_size: 8\nchunk_size: 2\nmax_steps: 5\noptim:\n  lr: 5e-4\n"
    )
    cfg = load_config(
        TrainConfig,
        f,
        ["optim.lr=1e-3", "lora.targets=[q_proj, v_proj]", "optim.betas=[0.9, 0.98]"],
        model="from-cli",
        chunk_size=None,
    )
    assert cfg.model == "from-cli" and cfg.chunk_size == 2  # None = option not given
    assert (
        cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.9, 0.98) and cfg.lora.targets == ["q_proj", "v_proj"]
    )
    assert (
        load_config(TrainConfig, f).optim.lr == 5e-4
    )  # YAML 1.1 reads "5e-4" as a string; accepted as a number
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(TrainConfig, saved) == cfg
    assert config_to_dict(load_config(TrainConfig, saved)) == config_to_dict(cfg)


def test_bad_configs_name_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("model: m\noutput_dir: o\nbatch_size: 8\nchunk_size: 2\nmax_steps: 5\noptim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.lrr.*valid keys: optim\.lr"):
        load_config(TrainConfig, f)
    with pytest.raises(ConfigError, match=r"batch_size must be an integer"):
        load_config(
            TrainConfig,
            None,
            ["batch_size=eight"],
            **{k: v for k, v in REQUIRED.items() if k != "batch_size"},
        )
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_config(TrainConfig, None, ["precision=fp8"], **REQUIRED)
    with pytest.raises(ConfigError, match="exactly one of max_steps and epochs"):
        load_config(TrainConfig, None, ["epochs=2"], **REQUIRED)
    with pytest.raises(ConfigError, match="missing required key chunk_size"):
        load_config(TrainConfig, None, [], model="m", output_dir="o", batch_size=8, max_steps=1)
    with pytest.raises(ConfigError, match="missing required key data"):
        load_config(Stage1Config, None, ["teacher.model=t"], **REQUIRED)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match=r"no config file or preset named 'nope'.*stage1-tiny"):
        load_config(TrainConfig, "nope")
    with pytest.raises(ConfigError, match=r"lora\.r must be >= 1"):
        load_config(TrainConfig, None, ["lora.r=0"], **REQUIRED)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, f)


def test_quantize_without_bitsandbytes_or_cuda_falls_back_with_a_warning(tiny_model_dir: Path) -> None:
    from uniretrieve.train.config import LoraConfig
    from uniretrieve.train.student import build_student

    with pytest.warns(UserWarning, match="bitsandbytes and a CUDA device"):
        student = build_student(
            str(tiny_model_dir), LoraConfig(r=2, alpha=4, quantize_4bit=True), device="cpu"
        )
    assert student.trainable_parameters()
