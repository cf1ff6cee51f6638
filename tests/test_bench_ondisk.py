"""benchmarks/ondisk.py end to end on a small size: shards, an on-disk build, both modes measured in fresh
processes, and the report's fields."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from benchmarks import ondisk

runner = CliRunner()


def test_ondisk_benchmark_small(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["--rows", "20000", "--dim", "32", "--nlist", "64", "--queries", "100", "--workers", "0"]
    r = runner.invoke(ondisk.app, [*args, "--work", str(tmp_path / "w"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    disk, ram = report["modes"]
    assert disk["mode"] == "on-disk" and ram["mode"] == "in-RAM"
    assert disk["ntotal"] == ram["ntotal"] == 20000
    assert disk["recall_at_10"] == ram["recall_at_10"] > 0.5  # the same lists, searched alike
    assert report["list_file_mib"] > 0 and disk["batch_qps"] > 0
