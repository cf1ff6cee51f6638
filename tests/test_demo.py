"""`uniretrieve demo` runs the whole pipeline (generate → encode → index → search) and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from uniretrieve.cli.app import app
from uniretrieve.demo import DemoConfig, run_demo, serve_command


def test_demo_pipeline_reports_ranks_and_reuses_its_work(tiny_model_dir, tmp_path: Path) -> None:
    cfg = DemoConfig(work=str(tmp_path / "demo"), model=str(tiny_model_dir), scenes=40, k=3, batch_size=8)
    report = run_demo(cfg)
    assert [r["query"] for r in report][:2] == ["short caption", "long caption"]
    for r in report:
        assert r["rank"] is not None and 1 <= r["rank"] <= 40
        assert len(r["hits"]) == 3 and r["hits"][0]["score"] >= r["hits"][-1]["score"]
    shard = next((tmp_path / "demo" / "embeddings").glob("part-*.parquet"))
    mtime = shard.stat().st_mtime_ns
    res = CliRunner().invoke(
        app, ["demo", "--output", cfg.work, "--model", cfg.model, "--scenes", "40", "-k", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "already built" in res.output and "UniME-LLaVA-OneVision-7B" in res.output
    # it ends with the one command that serves its index
    assert res.output.strip().splitlines()[-1].strip() == serve_command(Path(cfg.work) / "index", cfg.model)
    assert shard.stat().st_mtime_ns == mtime  # nothing re-encoded


@pytest.mark.parametrize("native_bf16", [True, False])
def test_serve_command_carries_the_fast_setting_for_the_built_in_model(
    native_bf16: bool, monkeypatch
) -> None:
    import uniretrieve.tiny.cpu as cpu

    monkeypatch.setattr(cpu, "bf16_supported", lambda: native_bf16)
    cmd = serve_command(Path("/tmp/my demo/index"))
    assert cmd.startswith(
        "uniretrieve serve --index '/tmp/my demo/index' --model-threads 1 --model-workers 2"
    )
    assert cmd.endswith("--model-dtype bfloat16") == native_bf16  # emulated bfloat16 is slower than float32
    # another model gets the plain command: the fast setting was measured for the built-in one
    assert serve_command(Path("idx"), "some/checkpoint") == "uniretrieve serve --index idx"
    # every option it prints is one that serve takes
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for flag in (w for w in cmd.split() if w.startswith("--")):
        assert flag in help_text, flag
