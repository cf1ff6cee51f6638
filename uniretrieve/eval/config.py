"""`EvalConfig`: everything that decides an evaluation run (the options of `uniretrieve eval`).

Kept apart from runner.py, which imports the embedder and metrics, so that building the CLI stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uniretrieve.config import no_cli, opt, trust_remote_code_opt
from uniretrieve.eval.benchmarks import BENCHMARKS, get_benchmark


def _split(values: list[str] | None) -> list[str] | None:
    """`--subsets a,b --subsets c` → ["a", "b", "c"]; nothing → None (all)."""
    out = [v.strip() for val in values or [] for v in val.split(",") if v.strip()]
    return out or None


@dataclass
class EvalConfig:
    """Everything that decides an evaluation run; saved into the results JSON. The CLI's --cache-dir / --no-cache
    (a default root, or none) are options of the command."""

    benchmark: str = field(
        metadata=opt(f"One of: {', '.join(BENCHMARKS)}.", argument=True, parse=str.lower, show_default=False)
    )
    data: str = field(
        metadata=opt("The benchmark's data folder in its public layout (see README).", "--data", type=Path)
    )
    model: str = field(metadata=opt("Checkpoint directory, hub id or registered name.", "--model", "-m"))
    subsets: list[str] | None = field(
        default=None,
        metadata=opt(
            "SugarCrepe categories or MMEB datasets (repeat, or comma-separate). Default: all.",
            "--subsets",
            parse=_split,
        ),
    )
    """SugarCrepe categories or MMEB dataset names; None = all."""
    image_root: str | None = field(
        default=None,
        metadata=opt(
            "Image folder (ShareGPT4V, SugarCrepe, MMEB) if not under --data.",
            "--image-root",
            type=Path | None,
        ),
    )
    """Image folder for ShareGPT4V, SugarCrepe and MMEB when not in the default place under `data`."""
    batch_size: int = field(default=16, metadata=opt("Items per forward pass.", "--batch-size"))
    workers: int = field(
        default=0, metadata=opt("Processes preparing inputs while the model runs (0: none).", "--workers")
    )
    """DataLoader processes preparing inputs (image decoding, processor) while the model runs; 0 = in-process."""
    cache_dir: str | None = field(default=None, metadata=no_cli())
    """Embedding cache root; None disables caching."""
    device: str | None = field(
        default=None, metadata=opt("cuda, cuda:1, cpu … (default: cuda if present).", "--device")
    )
    model_dtype: str | None = field(
        default=None,
        metadata=opt(
            "Compute dtype: bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU).",
            "--model-dtype",
            deprecated=("--dtype",),
        ),
    )
    adapter: str | None = field(
        default=None, metadata=opt("LoRA adapter directory merged into the model.", "--adapter")
    )
    max_text_tokens: int | None = field(
        default=0,
        metadata=opt(
            "Cut texts to this many tokens (0: never, as the official evaluations).", "--max-text-tokens"
        ),
    )
    """0: no truncation, as the official evaluation code (and the paper's numbers); None: the family's default."""
    trust_remote_code: bool = field(default=False, metadata=trust_remote_code_opt())

    def __post_init__(self) -> None:
        bench = get_benchmark(self.benchmark)
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"batch_size must be ≥ 1 and workers ≥ 0, got {self.batch_size}, {self.workers}")
        if self.subsets is not None and not bench.subsets:
            with_subsets = " and ".join(b for b in BENCHMARKS if BENCHMARKS[b].subsets)
            raise ValueError(f"--subsets applies to {with_subsets} only, not {self.benchmark}")
