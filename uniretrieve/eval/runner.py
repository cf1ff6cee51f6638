"""Benchmark data + encoder → scores. Data is read and checked before the model loads, so a missing file fails fast.

Scores are percentages (as the paper prints them). Result layout per kind:
- retrieval: {"t2i": {"R@1", "R@5", "R@10"}, "i2t": {…}, "images", "texts"}
- sugarcrepe: {"categories": {cat: {"accuracy", "items"}}, "groups": {Replace|Swap|Add: {"mean", "weighted", …}}}
- mmeb: {"datasets": {name: {"precision@1", "rows", …}}, "meta_tasks", "IND", "OOD", "overall", "meta_task_mean"}
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uniretrieve.eval.benchmarks import Benchmark, get_benchmark
from uniretrieve.eval.config import EvalConfig
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


def load_data(bench: Benchmark, cfg: EvalConfig) -> Any:
    """The benchmark's records: a RetrievalSet, a list of SugarCrepeSet, or (task table, list of MMEBSet)."""
    if bench.name in ("flickr30k", "coco"):
        from uniretrieve.eval.datasets_retrieval import load_e5v_retrieval

        return load_e5v_retrieval(cfg.data, bench.name)
    if bench.name == "sharegpt4v":
        from uniretrieve.eval.datasets_longcap import load_sharegpt4v

        return load_sharegpt4v(cfg.data, image_root=cfg.image_root)
    if bench.name == "urban1k":
        from uniretrieve.eval.datasets_longcap import load_urban1k

        return load_urban1k(cfg.data)
    if bench.name == "sugarcrepe":
        from uniretrieve.eval.datasets_sugarcrepe import load_sugarcrepe

        return load_sugarcrepe(cfg.data, cfg.subsets, image_root=cfg.image_root)
    from uniretrieve.eval.datasets_mmeb import load_mmeb_dataset
    from uniretrieve.eval.mmeb_tasks import resolve_subsets, task_table

    table = task_table(cfg.data)
    sets = [
        load_mmeb_dataset(cfg.data, ds, image_root=cfg.image_root)
        for ds in resolve_subsets(cfg.subsets, table)
    ]
    return table, sets


def _pct(x: float) -> float:
    return 100.0 * float(x)


def eval_retrieval(rs: RetrievalSet, emb: Embedder) -> dict[str, Any]:
    img = emb.embed(f"{rs.name}.images", rs.images)
    txt = emb.embed(f"{rs.name}.texts", rs.texts)
    rec = retrieval_recalls(txt, img, rs.text_to_image)
    out: dict[str, Any] = {d: {f"R@{k}": _pct(v) for k, v in rec[d].items()} for d in ("t2i", "i2t")}
    out.update(images=len(rs.images), texts=len(rs.texts), info=rs.info)
    return out


def eval_sugarcrepe(sets: list[SugarCrepeSet], emb: Embedder) -> dict[str, Any]:
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


def eval_mmeb(table: Sequence[MMEBDataset], sets: list[MMEBSet], emb: Embedder) -> dict[str, Any]:
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
    agg = mmeb_aggregate({n: v["precision@1"] for n, v in per.items()}, table)
    tasks = [{"name": d.name, "meta_task": d.meta_task, "ood": d.ood} for d in table]
    standard = tuple(table) == MMEB_DATASETS
    return {"datasets": per, **agg, "n_table": len(table), "standard_table": standard, "table": tasks}


def evaluate(bench: Benchmark, data: Any, emb: Embedder) -> dict[str, Any]:
    if bench.kind == "retrieval":
        return eval_retrieval(data, emb)
    if bench.kind == "sugarcrepe":
        return eval_sugarcrepe(data, emb)
    return eval_mmeb(*data, emb)


def load_encoder(cfg: EvalConfig, bench: Benchmark) -> Any:
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(
        cfg.model,
        device=cfg.device,
        dtype=cfg.dtype,
        adapter=cfg.adapter,
        prompt_regime=bench.prompt_regime,
        max_text_tokens=cfg.max_text_tokens,
    )


def run_eval(cfg: EvalConfig, *, encoder: Any = None, show_progress: bool = True) -> dict[str, Any]:
    """Read the data, load the encoder (unless given), embed (cached) and score. Returns the results dict."""
    from uniretrieve._version import __version__
    from uniretrieve.embed.manifest import utc_now
    from uniretrieve.eval.cache import EmbeddingCache

    bench = get_benchmark(cfg.benchmark)
    data = load_data(bench, cfg)
    if encoder is None:
        encoder = load_encoder(cfg, bench)
    elif encoder.prompt_regime != bench.prompt_regime:
        raise ValueError(
            f"{bench.name} needs prompt regime {bench.prompt_regime!r}; the encoder has {encoder.prompt_regime!r}"
        )
    model = encoder.describe()
    emb = Embedder(
        encoder,
        EmbeddingCache(cfg.cache_dir, model),
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        show_progress=show_progress,
    )
    with emb:
        scores = evaluate(bench, data, emb)
    title = bench.title
    if bench.kind == "mmeb" and not scores["standard_table"]:
        title = f"MMEB-style ({scores['n_table']} datasets from datasets.json)"
    return {
        "benchmark": bench.name,
        "title": title,
        "scores": scores,
        "model": model,
        "config": asdict(cfg),
        "embedding": {"encoded": emb.encoded, "from_cache": emb.reused, "texts_truncated": emb.truncated},
        "environment": {
            "uniretrieve": __version__,
            "python": platform.python_version(),
            "device": str(getattr(encoder, "device", "")),
            "dtype": str(getattr(encoder, "dtype", "")),
        },
        "created": utc_now(),
    }


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Results JSON, written atomically."""
    import json

    from uniretrieve.io import atomic_write_bytes

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, (json.dumps(results, indent=1, default=str) + "\n").encode())
    return p
