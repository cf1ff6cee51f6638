"""The search benchmark measures what it claims: its synthetic corpus is one fixed matrix however it is read (blocks,
id map, random access), its recall is against exact search over that matrix, and the one command writes a complete
row per configuration. Speed itself is never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.search import BLOCK, SyntheticSource, main, run_one


def test_synthetic_corpus_reads_the_same_through_every_path() -> None:
    src = SyntheticSource(BLOCK + 1000, 32, seed=3)
    full = np.concatenate([src.block(0), src.block(1)])
    assert full.shape == (BLOCK + 1000, 32)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    # Blocks as the index build reads them: every row once, in order, each id map row naming its own row.
    vecs, ids, rows = [], [], []
    for v, idmap in src.blocks(5000):
        vecs.append(v)
        ids += idmap.column("id").to_pylist()
        rows += idmap.column("row").to_pylist()
    np.testing.assert_array_equal(np.concatenate(vecs), full)
    assert ids == [str(i) for i in range(len(full))] and rows == list(range(len(full)))
    picks = np.array([BLOCK + 999, 0, 17, BLOCK, 17])
    np.testing.assert_array_equal(src.take(picks), full[picks])
    # Same seed, same corpus (another process rebuilds it); another seed, another corpus.
    np.testing.assert_array_equal(SyntheticSource(BLOCK + 1000, 32, seed=3).block(1), src.block(1))
    assert not np.allclose(SyntheticSource(BLOCK + 1000, 32, seed=4).block(0), src.block(0))


def test_recall_is_measured_against_exact_search(tmp_path: Path) -> None:
    flat = run_one("flat", 3000, 64, 40, 0.95, str(tmp_path), gpu=False)
    assert flat["recall@10"] == 1.0 and flat["storage"] == "fp32"
    assert flat["built_on"] == "cpu" and flat["searched_on"] == "cpu"  # as asked
    # nprobe tuned on separate fresh queries; the measured queries are others, so recall is near, not at, the target.
    ivf = run_one("ivf", 3000, 64, 40, 0.95, str(tmp_path), storage="fp16")
    assert ivf["factory"].endswith(",SQfp16") and ivf["tuned"]["nprobe"] >= 1
    assert 0.85 <= ivf["recall@10"] <= 1.0 and ivf["tuned_recall@10"] >= 0.95
    for row in (flat, ivf):
        assert row["qps_batch"] > 0 and row["latency_ms_single"] > 0 and row["build_s"] > 0


def test_one_command_writes_a_row_per_configuration(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rows.jsonl"
    types = "flat,hnsw"
    main(
        ["--quick", "--types", types, "--device", "cpu", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in rows] == types.split(",")
    assert all("error" not in r and r["n"] == 5000 and r["dim"] == 256 for r in rows)
    assert rows[0]["recall@10"] == 1.0
    table = capsys.readouterr().out
    assert "| flat (Flat) | 5000 | 256 | 1.0 |" in table and "| hnsw (HNSW32,Flat) | 5000 | 256 |" in table
