"""Saved configs carry a schema version; files without one (this release's) load, newer ones and unknown keys do
not: encode_config.json, index.json and its config block, training config.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniretrieve.config import SCHEMA_KEY, SCHEMA_VERSION, ConfigError
from uniretrieve.embed.config import CONFIG_NAME, EncodeConfig
from uniretrieve.index.meta import BuildConfig, IndexMeta, IndexMetaError, read_meta, write_meta
from uniretrieve.train.config import ConfigError as TrainConfigError
from uniretrieve.train.config import load_config, save_config
from uniretrieve.train.stage1 import Stage1Config


def test_one_config_error_class() -> None:
    assert TrainConfigError is ConfigError


def test_encode_config_file_round_trip(tmp_path: Path) -> None:
    cfg = EncodeConfig(input="pics", output=str(tmp_path), batch_size=4)
    data = json.loads(cfg.save(tmp_path).read_text())
    assert data[SCHEMA_KEY] == SCHEMA_VERSION
    assert EncodeConfig.from_dict(data) == cfg
    data.pop(SCHEMA_KEY)
    assert EncodeConfig.from_dict(data) == cfg  # written before the version existed
    with pytest.raises(ConfigError, match=r"unknown key.*colour"):
        EncodeConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match=rf"{CONFIG_NAME} has schema_version 99.*upgrade"):
        EncodeConfig.from_dict({**data, SCHEMA_KEY: 99})


def test_build_config_block_refuses_unknown_keys() -> None:
    d = BuildConfig(index_type="flat").to_dict()
    assert BuildConfig.from_dict(d) == BuildConfig(index_type="flat")
    with pytest.raises(IndexMetaError, match=r"unknown key.*nprob"):
        BuildConfig.from_dict({**d, "nprob": 3})


def test_index_json_unknown_keys_and_newer_versions_refused(tmp_path: Path) -> None:
    write_meta(tmp_path, IndexMeta(dim=4, num_vectors=1, type="flat", factory="Flat"))
    assert read_meta(tmp_path).dim == 4
    path = tmp_path / "index.json"
    d = json.loads(path.read_text())
    path.write_text(json.dumps({**d, "surprise": 1}))
    with pytest.raises(IndexMetaError, match=r"unknown key.*surprise"):
        read_meta(tmp_path)
    path.write_text(json.dumps({**d, "format_version": d["format_version"] + 1}))
    with pytest.raises(IndexMetaError, match="newer"):
        read_meta(tmp_path)


def test_training_config_yaml_carries_the_version(tmp_path: Path) -> None:
    cfg = load_config(
        Stage1Config, "stage1-tiny", model="m", output_dir=str(tmp_path), **{"data.path": "d.csv"}
    )
    path = save_config(cfg, tmp_path / "config.yaml")
    text = path.read_text()
    assert f"{SCHEMA_KEY}: {SCHEMA_VERSION}" in text
    assert load_config(Stage1Config, path) == cfg
    path.write_text(text.replace(f"{SCHEMA_KEY}: {SCHEMA_VERSION}", ""))
    assert load_config(Stage1Config, path) == cfg
    path.write_text(text.replace(f"{SCHEMA_KEY}: {SCHEMA_VERSION}", f"{SCHEMA_KEY}: 7"))
    with pytest.raises(ConfigError, match=r"schema_version 7.*upgrade"):
        load_config(Stage1Config, path)
