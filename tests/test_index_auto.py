"""`--type auto` by measurement: the selection rule on injected measurements, one small end-to-end build, and the
one-line message when the memory budget makes the target unreachable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.index_helpers import clustered_vectors
from uniretrieve.index import auto
from uniretrieve.index.auto import Candidate, pick, table_lines, unreachable_line
from uniretrieve.index.build import build_index
from uniretrieve.index.factory import make_choice, parse_bytes
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.source import ArraySource
from uniretrieve.index.tune import TuneResult

N, D = 90_000, 384
MB = 1 << 20


def cand(
    kind: str, *, recall: float, lower: float, qps: float, budget: int = 1 << 30, **kw: int
) -> Candidate:
    choice = make_choice(kind, N, D, budget=budget if kind == "ivfpq" else None, **kw)
    param = {"flat": "", "hnsw": "efSearch"}.get(kind, "nprobe")
    t = TuneResult(param, 0 if kind == "flat" else 32, recall, 0.1, 0.95, lower >= 0.95, 10, 500, "test")
    t.recall_lower = lower
    return Candidate(choice, t, qps, budget)


def test_pick_is_the_fastest_meeting_the_target() -> None:
    flat = cand("flat", recall=1.0, lower=1.0, qps=2300)
    hnsw = cand("hnsw", recall=0.97, lower=0.955, qps=8000)
    ivf = cand("ivf", recall=0.96, lower=0.951, qps=1200)
    fast_but_short = cand(
        "ivfpq", recall=0.96, lower=0.94, qps=20000
    )  # mean passes, the lower bound does not
    assert pick([flat, hnsw, ivf, fast_but_short]) is hnsw
    assert pick([flat, ivf, fast_but_short]) is flat
    lines = table_lines([flat, hnsw, ivf, fast_but_short], hnsw)
    assert lines[0].split()[:2] == ["candidate", "memory"]
    assert "<- chosen" in lines[2] and "HNSW32" in lines[2]
    assert "misses target" in lines[4] and "0.9400" in lines[4]


def test_pick_without_a_candidate_meeting_the_target_takes_the_best_bound() -> None:
    a = cand("ivfpq", recall=0.84, lower=0.83, qps=400, budget=20 * MB)
    b = cand("ivfpq", recall=0.80, lower=0.79, qps=900, budget=20 * MB, nlist=256)
    assert pick([b, a]) is a
    # a candidate over the budget is never picked while one fits
    over = cand("flat", recall=1.0, lower=1.0, qps=2000, budget=20 * MB)
    assert not over.fits and pick([a, over]) is a


def test_unreachable_message_names_best_recall_and_needed_budget() -> None:
    budget = parse_bytes("20MB")
    best = make_choice("ivfpq", N, D, budget=budget, train_n=65536)
    assert "Refine" not in best.factory  # no room for re-ranking at 20 MB
    t = TuneResult("nprobe", 1024, 0.836, 2.5, 0.95, False, 10, 500, "test")
    t.recall_lower = 0.829
    line = unreachable_line(best, t, n=N, d=D, budget=budget, storage="fp32", train_n=65536)
    assert "\n" not in line
    assert (
        f"recall 0.836 (lower bound 0.829) is the best {best.factory} reaches at --memory-budget 20.00 MiB"
        in line
    )
    refined = make_choice("ivfpq", N, D, pq_m=best.pq_m, budget=None, train_n=65536)
    assert refined.factory.endswith("Refine(SQ8)") and f"({refined.factory})" in line
    assert "raise --memory-budget or lower --target-recall" in line


def test_measured_auto_build_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "MEASURE_MIN_ROWS", 1000)
    x = clustered_vectors(4000, 32, seed=61)
    logs: list[str] = []
    meta = build_index(
        ArraySource(x),
        tmp_path / "i",
        BuildConfig(index_type="auto", target_recall=0.9, tune_queries=200, memory_budget=64 * MB),
        log=logs.append,
    )
    cands = meta.choice["candidates"]
    assert [c["type"] for c in cands] == ["flat", "ivf", "ivfpq", "hnsw"]  # the table of kinds, in its order
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["factory"] == meta.factory
    meeting = [c for c in cands if c["recall_lower"] >= 0.9]
    assert chosen[0]["qps"] == max(c["qps"] for c in meeting)
    assert any("auto: measuring 4 candidates" in m for m in logs)
    assert sum("<- chosen" in m for m in logs) == 1 and any("Why: the fastest of 4" in m for m in logs)
    from uniretrieve.search.searcher import Searcher

    with Searcher.load(tmp_path / "i") as s:
        hits = s.search(vectors=x[:5], k=3)
    assert [h[0].internal_id for h in hits] == list(range(5))
    assert s.idmap.num_rows == 4000 and np.array_equal(
        s.idmap.column("internal_id").to_numpy(), np.arange(4000)
    )
