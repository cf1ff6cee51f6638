"""Remote code runs only with an explicit opt-in: never because a checkpoint's config or an index's metadata asks.

The hostile checkpoint says `model_type: phi3_v` (a family that needs its checkpoint's own code) and points its
`auto_map` at bundled modules that create a marker file when imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.index_helpers import random_vectors, write_shard_dir
from uniretrieve.cli.app import app
from uniretrieve.models.backbones import REGISTRY
from uniretrieve.models.loading import ModelLoadError, check_remote_code

runner = CliRunner()


def hostile_checkpoint(root: Path, marker: Path) -> Path:
    root.mkdir(parents=True)
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    for module in ("configuration_evil", "modeling_evil", "processing_evil"):
        (root / f"{module}.py").write_text(code)
    config = {
        "model_type": "phi3_v",
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
            "AutoProcessor": "processing_evil.EvilProcessor",
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    (root / "preprocessor_config.json").write_text(json.dumps({"auto_map": config["auto_map"]}))
    return root


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "remote-code-ran"
    return hostile_checkpoint(tmp_path / "evil-ckpt", marker), marker


def _one_line_refusal(res, ckpt: Path) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert str(ckpt) in lines[0] and "--trust-remote-code" in lines[0]
    return lines[0]


def test_the_api_refuses_without_the_opt_in(hostile: tuple[Path, Path]) -> None:
    from uniretrieve.models.encoder import Encoder
    from uniretrieve.train.config import LoraConfig

    ckpt, marker = hostile
    with pytest.raises(ModelLoadError, match="--trust-remote-code") as info:
        Encoder.from_pretrained(str(ckpt), device="cpu")
    assert str(ckpt) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        Encoder.build(str(ckpt), LoraConfig(), device="cpu")
    assert not marker.exists()


def test_encode_refuses_without_the_flag(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, marker = hostile
    corpus = tmp_path / "texts.jsonl"
    corpus.write_text('{"id": "a", "text": "a red cube"}\n')
    res = runner.invoke(app, ["encode", str(corpus), "-o", str(tmp_path / "out"), "-m", str(ckpt)])
    _one_line_refusal(res, ckpt)
    assert not marker.exists()


def test_search_refuses_the_model_an_index_names(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, marker = hostile
    shards = write_shard_dir(tmp_path / "shards", random_vectors(20, 8), model_id=str(ckpt))
    res = runner.invoke(app, ["index", "build", str(shards), "-o", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "a red cube", "-i", str(tmp_path / "idx")])
    _one_line_refusal(res, ckpt)
    assert not marker.exists()


def test_the_registry_states_a_need_not_a_permission() -> None:
    spec = REGISTRY["phi3_v"]
    assert spec.trust_remote_code  # this family needs the checkpoint's code …
    with pytest.raises(ModelLoadError):
        check_remote_code(spec, "x", "x", allowed=False)  # … which the user must still allow
    check_remote_code(spec, "x", "x", allowed=True)
    check_remote_code(REGISTRY["llava"], "x", "x", allowed=False)  # families without remote code need nothing


@pytest.mark.parametrize(
    "command",
    ["encode", "search", "eval", "demo", "train stage1", "train stage2", "train stage1-eval"],
)
def test_every_model_loading_command_offers_the_flag(command: str) -> None:
    res = runner.invoke(app, [*command.split(), "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--trust-remote-code" in res.output


def test_an_auto_map_in_a_known_familys_config_is_ignored(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A llava checkpoint whose config (and processor config) points at bundled code loads with the transformers
    classes; the bundled code never runs."""
    import shutil

    from uniretrieve.models.encoder import Encoder

    ckpt = tmp_path / "llava-with-auto-map"
    shutil.copytree(tiny_model_dir, ckpt)
    marker = tmp_path / "remote-code-ran"
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    auto_map = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model", "AutoProcessor": "evil.Processor"}
    (ckpt / "evil.py").write_text(code)
    for name in ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (ckpt / name).is_file():
            cfg = json.loads((ckpt / name).read_text())
            (ckpt / name).write_text(json.dumps({**cfg, "auto_map": auto_map}))
    enc = Encoder.from_pretrained(str(ckpt), device="cpu")
    assert enc.family == "llava" and enc.encode_texts(["a red cube"]).shape[0] == 1
    assert not marker.exists()
