"""The per-benchmark steps that `BENCHMARKS` entries name: a loader (config → records) and a scorer (records +
embedder → scores, percentages as the paper prints them).

Loaders take `(benchmark, EvalConfig)` and read the public layout through `datasets_*.py`; scorers take
`(records, embedder)`. benchmarks.py imports this module only when a benchmark runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uniretrieve.eval import (
    datasets_longcap,
    datasets_mmeb,
    datasets_retrieval,
    datasets_sugarcrepe,
    mmeb_tasks,
)
from uniretrieve.eval.benchmarks import Benchmark
from uniretrieve.eval.embedder import Embedder
from uniretrieve.eval.metrics import (
    mmeb_aggregate,
    mmeb_precision_at_1,
    retrieval_recalls,
    sugarcrepe_accuracy,
    sugarcrepe_groups,
)
from uniretrieve.eval.mmeb_tasks import MMEB_DATASETS, MMEBDataset
from uniretrieve.eval.records import MMEBSet, RetrievalSet, SugarCrepeSet


# --- loaders: (benchmark, EvalConfig) → records ----------------------------------------------------------------
def load_e5v(bench: Benchmark, cfg: Any) -> RetrievalSet:
    return datasets_retrieval.load_e5v_retrieval(cfg.data, bench.name)


def load_sharegpt4v(bench: Benchmark, cfg: Any) -> RetrievalSet:
    return datasets_longcap.load_sharegpt4v(cfg.data, image_root=cfg.image_root)


def load_urban1k(bench: Benchmark, cfg: Any) -> RetrievalSet:
    return datasets_longcap.load_urban1k(cfg.data)


def load_sugarcrepe(bench: Benchmark, cfg: Any) -> list[SugarCrepeSet]:
    return datasets_sugarcrepe.load_sugarcrepe(cfg.data, cfg.subsets, image_root=cfg.image_root)


def load_mmeb(bench: Benchmark, cfg: Any) -> tuple[tuple[MMEBDataset, ...], list[MMEBSet]]:
    """(the task table: datasets.json in the data folder or the standard 36, the selected datasets' records)."""
    table = mmeb_tasks.task_table(cfg.data)
    sets = [
        datasets_mmeb.load_mmeb_dataset(cfg.data, ds, image_root=cfg.image_root)
        for ds in mmeb_tasks.resolve_subsets(cfg.subsets, table)
    ]
    return table, sets


# --- scorers: (records, Embedder) → scores -----------------------------------------------------------------------
def _pct(x: float) -> float:
    return 100.0 * float(x)


def score_retrieval(rs: RetrievalSet, emb: Embedder) -> dict[str, Any]:
    img = emb.embed(f"{rs.name}.images", rs.images)
    txt = emb.embed(f"{rs.name}.texts", rs.texts)
    rec = retrieval_recalls(txt, img, rs.text_to_image)
    out: dict[str, Any] = {d: {f"R@{k}": _pct(v) for k, v in rec[d].items()} for d in ("t2i", "i2t")}
    out.update(images=len(rs.images), texts=len(rs.texts), info=rs.info)
    return out


def score_sugarcrepe(sets: list[SugarCrepeSet], emb: Embedder) -> dict[str, Any]:
    # The categories share COCO images and many captions: embed each unique one once over all categories.
    img = emb.embed("sugarcrepe.images", [x for s in sets for x in s.images])
    txt = emb.embed("sugarcrepe.texts", [x for s in sets for x in (*s.positives, *s.negatives)])
    cats: dict[str, dict[str, Any]] = {}
    i0 = t0 = 0
    for s in sets:
        n = len(s.images)
        pos, neg = txt[t0 : t0 + n], txt[t0 + n : t0 + 2 * n]
        acc = sugarcrepe_accuracy(img[i0 : i0 + n], pos, neg)
        cats[s.name] = {"accuracy": _pct(acc), "items": n}
        i0, t0 = i0 + n, t0 + 2 * n
    groups = sugarcrepe_groups({c: (v["accuracy"], v["items"]) for c, v in cats.items()})
    return {"categories": cats, "groups": groups, "group_score": "mean"}


def score_mmeb(data: tuple[Sequence[MMEBDataset], list[MMEBSet]], emb: Embedder) -> dict[str, Any]:
    table, sets = data
    per: dict[str, dict[str, Any]] = {}
    for s in sets:
        q = emb.embed(f"mmeb.{s.name}.queries", s.queries)
        c = emb.embed(f"mmeb.{s.name}.candidates", s.candidates)
        per[s.name] = {
            "precision@1": _pct(mmeb_precision_at_1(q, c, s.query_index, s.candidate_index)),
            "rows": s.n_rows,
            "unique_queries": len(s.queries),
            "unique_candidates": len(s.candidates),
            "candidate_refs": s.n_candidate_refs,
        }
    # datasets outside the table (CIFAR-100) are reported apart and never enter an aggregate
    names = {d.name for d in table}
    meta_task = {d.name: d.meta_task for d in mmeb_tasks.EXTRA_DATASETS}
    extra = {n: {**per.pop(n), "meta_task": meta_task.get(n)} for n in list(per) if n not in names}
    agg = mmeb_aggregate({n: v["precision@1"] for n, v in per.items()}, table)
    tasks = [{"name": d.name, "meta_task": d.meta_task, "ood": d.ood} for d in table]
    standard = tuple(table) == MMEB_DATASETS
    out = {"datasets": per, **agg, "n_table": len(table), "standard_table": standard, "table": tasks}
    if extra:
        out["extra_datasets"] = extra
    return out
