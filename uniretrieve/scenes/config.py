"""`GenerateConfig`: what a generated scene corpus is made of (the options of `uniretrieve scenes generate`).

Kept apart from generate.py, which imports the renderer, so that building the CLI stays light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uniretrieve.config import no_cli, opt
from uniretrieve.scenes.spec import SamplerConfig

LAYOUTS: tuple[str, ...] = (
    "short",
    "sharegpt4v",
    "urban1k",
    "sugarcrepe",
    "mmeb-eval",
    "mmeb-train",
    "nli",
    "llava-pretrain",
)
"""Output folders; the first five hold the test split (benchmarks), the last three the train split."""


@dataclass(frozen=True)
class GenerateConfig:
    out: str = field(
        metadata=opt("Output folder (created).", "--output", "-o", type=Path, deprecated=("--out",))
    )
    """Output folder (created)."""
    seed: int = field(default=0, metadata=opt("Seed; the same seed and options give byte-identical files."))
    train_scenes: int = field(default=5000, metadata=opt("Number of training scenes.", "--scenes"))
    test_scenes: int = field(default=1000, metadata=opt("Number of held-out test scenes (benchmarks)."))
    """1000 matches the public Flickr30K / ShareGPT4V-1K / Urban1K test sizes."""
    test_seed: int | None = field(default=None, metadata=opt("Seed of the test split (default: --seed)."))
    """Seed of the test split's streams; None → `seed`. Either way test scenes never share content with train."""
    short_captions_per_image: int = field(default=5, metadata=no_cli())
    mmeb_eval_rows: int = field(default=500, metadata=opt("Rows per MMEB-eval dataset."))
    """Rows per MMEB-eval dataset (MMEB has 1000), capped by the test split size."""
    mmeb_eval_candidates: int = field(default=100, metadata=opt("Candidates per retrieval/grounding row."))
    """Candidate-list length for retrieval and grounding (MMEB has about 1000); class/answer sets are complete."""
    stage1_pairs_per_scene: int = field(
        default=2, metadata=opt("Stage-1 paraphrase pairs per training scene.", "--pairs-per-scene")
    )
    layouts: tuple[str, ...] = field(
        default=LAYOUTS,
        metadata=opt(
            "Write only this layout (repeatable; default: all): short, sharegpt4v, urban1k, sugarcrepe, "
            "mmeb-eval, mmeb-train, nli, llava-pretrain.",
            "--layout",
            type=list[str] | None,
            default=None,
            parse=lambda names: tuple(names) if names else LAYOUTS,
            metavar="NAME",
        ),
    )
    sampler: SamplerConfig = field(default_factory=SamplerConfig, metadata=no_cli())

    def __post_init__(self) -> None:
        if self.train_scenes < 0 or self.test_scenes < 1:
            raise ValueError("need train_scenes >= 0 and test_scenes >= 1")
        if self.short_captions_per_image < 1 or self.stage1_pairs_per_scene < 1:
            raise ValueError("short_captions_per_image and stage1_pairs_per_scene must be >= 1")
        if self.mmeb_eval_rows < 1 or self.mmeb_eval_candidates < 2:
            raise ValueError("mmeb_eval_rows must be >= 1 and mmeb_eval_candidates >= 2")
        unknown = set(self.layouts) - set(LAYOUTS)
        if unknown:
            raise ValueError(f"unknown layout(s) {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("out")  # where the corpus lives is not part of what it is
        d["layouts"] = list(self.layouts)
        d["sampler"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["sampler"].items()}
        return d
