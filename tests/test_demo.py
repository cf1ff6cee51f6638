"""`uniretrieve demo` runs the whole pipeline (generate → encode → index → search) and resumes."""

from __future__ import annotations

from pathlib import Path

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
    assert res.output.strip().splitlines()[-1].strip() == serve_command(Path(cfg.work) / "index")
    assert shard.stat().st_mtime_ns == mtime  # nothing re-encoded
