"""The serving benchmark runs end to end on a tiny index (real `uniretrieve serve` processes, real `index add`s) and
reports complete phases with zero errors. Speed itself is never asserted."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.serve_load import main, queries
from tests.serve_helpers import IMAGE_NAMES, build_flat, encode_folder, write_images


def test_queries_are_varied_and_reproducible() -> None:
    qs = queries(200)
    assert qs == queries(200) and len(set(qs)) > 150


def test_the_runner_on_a_tiny_index(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    corpus = write_images(tmp_path / "corpus", IMAGE_NAMES)
    index = build_flat(
        encode_folder(corpus, tmp_path / "shards", tiny_model_dir, tiny_encoder), tmp_path / "idx"
    )
    out = tmp_path / "serve.json"
    args = ["--index", str(index), "--model", str(tiny_model_dir), "--work", str(tmp_path / "work")]
    args += ["--clients", "3", "--seconds", "2", "--max-queries", "30", "--single-queries", "5"]
    args += ["--swaps", "1", "--swap-images", "2", "--cli-runs", "1", "--json-out", str(out)]
    main(args)
    result = json.loads(out.read_text())
    phases = {p["phase"]: p for p in result["phases"]}
    assert set(phases) == {
        "single client",
        "micro-batching",
        "micro-batching during index add",
        "no micro-batching",
    }
    for p in phases.values():
        assert p["errors"] == 0 and p["queries"] > 0, p
        assert p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]
    swap = phases["micro-batching during index add"]
    assert swap["extra"]["version_after"] == ["v-000002"]  # the add was swapped in
    assert len(result["cli_search_seconds"]) == 1
    # the original index is untouched: the adds went to a copy
    assert sorted(p.name for p in index.iterdir() if p.name.startswith("v-")) == ["v-000001"]
