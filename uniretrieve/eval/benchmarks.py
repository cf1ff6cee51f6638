"""The benchmarks `uniretrieve eval` runs, as data: their kind, prompt regime and where their data comes from.

Prompt regimes (docs/benchmarks.md#prompts): the five zero-shot retrieval/compositionality benchmarks use UniME's
E5-V "Summary above sentence/image in one word:" prompts with no instruction (self_evaluate/retrieval_self.py,
sugar_crepe_self.py); MMEB uses the raw `qry_text`/`tgt_text` instruction strings with no chat template (VLM2Vec v1
eval.py, as the UniME README runs it).

Each entry names its loader and scorer ("module:function", imported when the benchmark runs, so importing the
table stays cheap); adding a benchmark is adding one entry (and its loader in steps.py when no existing one fits).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STEPS = "uniretrieve.eval.steps"


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    kind: str
    """"retrieval" (R@k both ways), "sugarcrepe" (pos-vs-neg accuracy) or "mmeb" (precision@1)."""
    prompt_regime: str
    data: str
    """Where to get the data and how to lay it out (shown in --help and the README)."""
    loader: str
    """"module:function" taking (Benchmark, EvalConfig) → the benchmark's records."""
    scorer: str
    """"module:function" taking (records, Embedder) → the scores dict."""
    subsets: bool = False
    """Whether --subsets selects parts of it (SugarCrepe categories, MMEB datasets)."""

    def load(self, cfg: Any) -> Any:
        """The benchmark's records, read and checked (before any model loads, so a missing file fails fast)."""
        return resolve(self.loader)(self, cfg)

    def score(self, records: Any, emb: Any) -> dict[str, Any]:
        return resolve(self.scorer)(records, emb)


def resolve(ref: str) -> Callable[..., Any]:
    """The function a "package.module:function" reference names."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "flickr30k",
            "Flickr30K (1K test)",
            "retrieval",
            "e5v",
            "HF royokong/flickr30k_test → PATH/data/test-*.parquet",
            f"{STEPS}:load_e5v",
            f"{STEPS}:score_retrieval",
        ),
        Benchmark(
            "coco",
            "MS-COCO (5K test)",
            "retrieval",
            "e5v",
            "HF royokong/coco_test → PATH/data/test-*.parquet",
            f"{STEPS}:load_e5v",
            f"{STEPS}:score_retrieval",
        ),
        Benchmark(
            "sharegpt4v",
            "ShareGPT4V-1K",
            "retrieval",
            "e5v",
            "HF Lin-Chen/ShareGPT4V share-captioner_coco_lcs_sam_1246k_1107.json in PATH; its images under PATH "
            "(or --image-root)",
            f"{STEPS}:load_sharegpt4v",
            f"{STEPS}:score_retrieval",
        ),
        Benchmark(
            "urban1k",
            "Urban1K",
            "retrieval",
            "e5v",
            "HF BeichenZhang/Urban1k → PATH/image/*.jpg, PATH/caption/*.txt",
            f"{STEPS}:load_urban1k",
            f"{STEPS}:score_retrieval",
        ),
        Benchmark(
            "sugarcrepe",
            "SugarCrepe",
            "sugarcrepe",
            "e5v",
            "RAIVNLab/sugar-crepe data/*.json in PATH (or PATH/data); COCO val2017 images in PATH/val2017",
            f"{STEPS}:load_sugarcrepe",
            f"{STEPS}:score_sugarcrepe",
            subsets=True,
        ),
        Benchmark(
            "mmeb",
            "MMEB (36 image tasks)",
            "mmeb",
            "mmeb",
            "HF TIGER-Lab/MMEB-eval → PATH/<Dataset>/test-*.parquet; images.zip unzipped into PATH/eval_images",
            f"{STEPS}:load_mmeb",
            f"{STEPS}:score_mmeb",
            subsets=True,
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}") from None
