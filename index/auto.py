"""`--type auto` by measurement: build every index kind that fits the memory budget, tune each to the target, time
each at its tuned value, keep the fastest whose recall lower bound meets the target (docs/tuning.md#the-auto-choice).

Where building every candidate is cheap (CPU builds of at most MEASURE_MAX_ELEMENTS = N·d floats, from
MEASURE_MIN_ROWS rows on; below that an exact scan takes well under a millisecond) the candidates are the rows of the
table of index kinds (kinds.py) resolved for this corpus and budget; elsewhere `factory.choose_index`'s rule decides
(HNSW and IVF builds of millions of vectors take too long to make several). The winner's build is kept, not redone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.factory import IndexChoice, IndexChoiceError, format_bytes, make_choice
from uniretrieve.index.kinds import INDEX_KINDS
from uniretrieve.index.tune import TuneResult

MEASURE_MIN_ROWS = 10_000
MEASURE_MAX_ELEMENTS = 100_000_000  # N·d: e.g. 260,000 × 384 or 100,000 × 1024
QPS_REPEATS = 3


def measures(n: int, d: int, *, gpu: bool) -> bool:
    """Whether `auto` builds and measures candidates at this size (else the rule in factory.choose_index)."""
    return not gpu and n >= MEASURE_MIN_ROWS and n * d <= MEASURE_MAX_ELEMENTS


@dataclass
class Candidate:
    """One built and tuned index kind, with what it measured."""

    choice: IndexChoice
    tuning: TuneResult
    qps: float
    """Batch queries/s at the tuned value (all tuning queries in one call, best of QPS_REPEATS)."""
    budget: int
    index: Any = None

    @property
    def fits(self) -> bool:
        return self.choice.expected_bytes <= self.budget

    @property
    def meets(self) -> bool:
        return self.fits and self.tuning.reached


def candidate_choices(n: int, d: int, *, budget: int, storage: str, train_n: int) -> list[IndexChoice]:
    """Every kind of the table resolved for n × d within `budget` (IVF-PQ with the largest code that fits); kinds
    whose smallest layout exceeds the budget are left out."""
    out = []
    for kind in INDEX_KINDS:
        try:
            c = make_choice(kind, n, d, budget=budget, train_n=train_n, storage=storage, reason="measured")
        except IndexChoiceError:
            continue
        if c.expected_bytes <= budget:
            out.append(c)
    return out


def pick(cands: list[Candidate]) -> Candidate:
    """The fastest candidate meeting the target within the budget; when none does, the one with the best recall
    lower bound within the budget (then faster first)."""
    meeting = [c for c in cands if c.meets]
    if meeting:
        return max(meeting, key=lambda c: (c.qps, -c.choice.expected_bytes))
    fitting = [c for c in cands if c.fits] or cands
    return max(fitting, key=lambda c: (c.tuning.recall_lower, c.qps))


def table_lines(cands: list[Candidate], chosen: Candidate) -> list[str]:
    """The build log's candidate table: kind, memory, tuned value, recall (lower bound), QPS, chosen."""
    k = chosen.tuning.k
    head = f"  {'candidate':<34} {'memory':>11} {'tuned':>15} {f'recall@{k} (lower)':>19} {'QPS':>9}"
    lines = [head]
    for c in cands:
        t = c.tuning
        tuned = f"{t.param}={t.value}" if t.param else "exact"
        mark = "  <- chosen" if c is chosen else ("  (misses target)" if not t.reached else "")
        lines.append(
            f"  {c.choice.factory:<34} {format_bytes(c.choice.expected_bytes):>11} {tuned:>15} "
            f"{t.recall:>10.4f} ({t.recall_lower:.4f}) {c.qps:>9.0f}{mark}"
        )
    return lines


def time_batch(search: Callable[[np.ndarray, int], Any], queries: np.ndarray, k: int) -> float:
    """Queries/s of one batch search of `queries`, best of QPS_REPEATS."""
    best = float("inf")
    for _ in range(QPS_REPEATS):
        t0 = time.perf_counter()
        search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / max(best, 1e-9)


def unreachable_line(
    best: IndexChoice,
    result: TuneResult,
    *,
    n: int,
    d: int,
    budget: int,
    storage: str,
    train_n: int,
) -> str:
    """One line when the budget makes the target unreachable: the best recall within it and the budget that would
    reach it — the cheapest layout keeping more exact vectors than `best` (PQ codes → + SQ8 re-ranking → full fp16
    → full fp32 vectors, IVF with every list probed being exact search)."""
    ladder = [make_choice("ivfpq", n, d, pq_m=best.pq_m or None, budget=None, train_n=train_n)]
    ladder += [make_choice("ivf", n, d, storage=s) for s in ("fp16", "fp32")]
    bigger = [c for c in ladder if c.expected_bytes > max(best.expected_bytes, budget)]
    if result.latency_budget_ms is not None and not bigger:
        return (
            f"recall {result.recall:.3f} is the best {best.factory} reaches within --latency-ms "
            f"{result.latency_budget_ms}; the target {result.target} needs a longer --latency-ms or a lower "
            f"--target-recall"
        )
    need = min(bigger, key=lambda c: c.expected_bytes) if bigger else None
    needs = (
        f"the target {result.target} needs ≈ {format_bytes(need.expected_bytes)} ({need.factory})"
        if need is not None
        else f"the target {result.target} is not reached even by full vectors at this size"
    )
    return (
        f"recall {result.recall:.3f} (lower bound {result.recall_lower:.3f}) is the best {best.factory} reaches at "
        f"--memory-budget {format_bytes(budget)}; {needs} — raise --memory-budget or lower --target-recall"
    )


class CountingIdMap:
    """Stands in for the id-map writer while a candidate is built: counts rows, writes nothing (the winner's id
    map is written once, after the choice)."""

    def __init__(self) -> None:
        self.next_id = 0

    def write(self, block: Any) -> None:
        self.next_id += len(block)

    def abort(self) -> None:
        pass


def build_candidates(
    source: Any, config: Any, tq: Any, *, train_source: Any, log: Callable[[str], None]
) -> tuple[Candidate, list[Candidate], float, float]:
    """Build, tune and time every candidate; returns (chosen, all, its train seconds, its add seconds). Only the best
    index so far is kept in memory besides the one being built."""
    from uniretrieve.index.build import HeldTail, add_blocks, new_index, train
    from uniretrieve.index.tune import set_param, tune

    n, d = source.num_rows, source.dim
    train_n = min(train_source.num_rows, config.train_rows or 65536, 65536)
    choices = candidate_choices(n, d, budget=config.memory_budget, storage=config.storage, train_n=train_n)
    if not choices:
        raise IndexChoiceError(
            f"no index kind fits --memory-budget {format_bytes(config.memory_budget)} for {n} × {d}; raise it"
        )
    log(
        f"auto: measuring {len(choices)} candidates on all {n} vectors: {', '.join(c.factory for c in choices)}"
    )
    cands: list[Candidate] = []
    best: Candidate | None = None
    seconds: dict[int, tuple[float, float]] = {}
    for choice in choices:
        index = new_index(choice, d, config)
        for name, value in choice.params.items():
            set_param(index, name, value)
        t_train = train(index, choice, train_source, config, on_gpu=False, log=log)
        counter = CountingIdMap()
        held = HeldTail(tq.hold_from) if tq.hold_from is not None else None
        t_add = add_blocks(index, source, counter, config, log=lambda m: None, hold=held)
        result = tune(
            index, choice.type, tq, target=config.target_recall, k=config.k, nlist=choice.nlist,
            latency_ms=config.latency_ms,
        )  # fmt: skip
        qps = time_batch(lambda q, kk, ix=index: ix.search(q, kk), tq.vectors, config.k)
        if held is not None:
            held.add_to(index, counter)
        cand = Candidate(choice, result, qps, config.memory_budget, index)
        cands.append(cand)
        seconds[id(cand)] = (t_train, t_add)
        best = pick([c for c in (best, cand) if c is not None])
        for c in cands:
            if c is not best:
                c.index = None  # free every candidate but the best so far
    chosen = pick(cands)
    set_param(chosen.index, chosen.tuning.param, chosen.tuning.value)
    t_train, t_add = seconds[id(chosen)]
    return chosen, cands, t_train, t_add


def build_measured(
    source: Any,
    out: Path,
    config: Any,
    tune_source: Any | None,
    train_source: Any | None,
    source_info: dict[str, Any] | None,
    log: Callable[[str], None],
    t_start: float,
) -> Any:
    """`auto` by measurement (index/auto.py): every candidate built, tuned and timed; the fastest meeting the target
    within the budget is written."""
    from uniretrieve.index.build import (
        _write_index,
        log_unreachable,
        tune_line,
        tuning_queries,
        write_build_meta,
    )
    from uniretrieve.index.idmap import IDMAP_NAME, IdMapWriter
    from uniretrieve.index.meta import INDEX_NAME

    t0 = time.perf_counter()
    tq = tuning_queries(source, config, tune_source, hold_tail=True)
    chosen, cands, t_train, t_add = build_candidates(
        source, config, tq, train_source=train_source or source, log=log
    )
    for line in table_lines(cands, chosen):
        log(line)
    met = [c for c in cands if c.meets]
    why = (
        f"the fastest of {len(cands)} candidates measured whose recall@{config.k} lower bound reaches "
        f"{config.target_recall} within {format_bytes(config.memory_budget)}"
        if met
        else f"no candidate within {format_bytes(config.memory_budget)} reaches {config.target_recall}; "
        f"the one closest to it"
    )
    choice = replace(chosen.choice, reason=why)
    log(
        f"index: {choice.type} ({choice.factory}) for {source.num_rows} × {source.dim}; expected memory "
        f"{format_bytes(choice.expected_bytes)} (budget {format_bytes(config.memory_budget)}). Why: {why}"
    )
    log(tune_line(chosen.tuning))
    log_unreachable(choice, chosen.tuning, source, config, train_source, log)
    idmap = IdMapWriter(out / IDMAP_NAME)
    try:
        for _, rows in source.blocks(config.block_rows):
            idmap.write(rows)
        if idmap.next_id != chosen.index.ntotal:
            raise RuntimeError(
                f"id map holds {idmap.next_id} rows but the index {chosen.index.ntotal} vectors"
            )
    except BaseException:
        idmap.abort()
        raise
    _write_index(chosen.index, out / INDEX_NAME)
    idmap.close()
    candidates = [
        {
            "type": c.choice.type,
            "factory": c.choice.factory,
            "expected_bytes": c.choice.expected_bytes,
            "param": c.tuning.param,
            "value": c.tuning.value,
            "recall": round(c.tuning.recall, 5),
            "recall_lower": round(c.tuning.recall_lower, 5),
            "qps": round(c.qps, 1),
            "chosen": c is chosen,
        }
        for c in cands
    ]
    # "tune": ground truth plus building, tuning and timing the candidates that lost
    seconds = {"train": t_train, "add": t_add, "tune": time.perf_counter() - t0 - t_train - t_add}
    return write_build_meta(
        out,
        chosen.index,
        {**choice.to_dict(), "candidates": candidates},
        chosen.tuning,
        source,
        config,
        source_info,
        seconds,
        t_start,
        False,
    )
