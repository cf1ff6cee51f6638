"""Benchmark data + encoder → scores. Data is read and checked before the model loads, so a missing file fails fast.
Each benchmark's loader and scorer are named by its `BENCHMARKS` entry (steps.py).

Scores are percentages (as the paper prints them). Result layout per kind:
- retrieval: {"t2i": {"R@1", "R@5", "R@10"}, "i2t": {…}, "images", "texts"}
- sugarcrepe: {"categories": {cat: {"accuracy", "items"}}, "groups": {Replace|Swap|Add: {"mean", "weighted", …}}}
- mmeb: {"datasets": {name: {"precision@1", "rows", …}}, "meta_tasks", "IND", "OOD", "overall", "meta_task_mean"}
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uniretrieve.eval.benchmarks import Benchmark, get_benchmark
from uniretrieve.eval.config import EvalConfig
from uniretrieve.eval.embedder import Embedder


def load_encoder(cfg: EvalConfig, bench: Benchmark) -> Any:
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(
        cfg.model,
        device=cfg.device,
        dtype=cfg.model_dtype,
        adapter=cfg.adapter,
        prompt_regime=bench.prompt_regime,
        max_text_tokens=cfg.max_text_tokens,
        trust_remote_code=cfg.trust_remote_code,
    )


def run_eval(cfg: EvalConfig, *, encoder: Any = None, show_progress: bool = True) -> dict[str, Any]:
    """Read the data, load the encoder (unless given), embed (cached) and score. Returns the results dict."""
    from uniretrieve._version import __version__
    from uniretrieve.embed.manifest import utc_now
    from uniretrieve.eval.cache import EmbeddingCache

    bench = get_benchmark(cfg.benchmark)
    data = bench.load(cfg)
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
        scores = bench.score(data, emb)
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

    from uniretrieve.io import atomic_write_json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, results)
    return p
