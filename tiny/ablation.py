"""The paper's ablation, measured on generated scenes (UniME Table 5 analogue;
docs/benchmarks.md#published-numbers).

    python -m uniretrieve.tiny.ablation --recipe runs/unime-tiny --out runs/ablation

Rows (all scored on the recipe's held-out test split, a seed never used in training):
  CLIP-style dual encoder   the learnability gate's encoder (benchmarks/learnability.py) with a 77-token text
                            limit, CLIP loss on the same image–caption pairs, as many pairs as the MLLM's ViT
                            pre-alignment, pretraining and stage 2 together
  base MLLM, prompted       the generatively pretrained base, E5-V prompts, no UniME training
  stage 1 only              base → stage 1
  stage 2 only              base → stage 2
  stage 2, in-batch         base → stage 1 → stage 2 with plain in-batch InfoNCE instead of hard negatives
  stage 1 + stage 2         = unime-tiny
The recipe (`uniretrieve train unime-tiny --output runs/unime-tiny`) provides the data, the base, stage 1 and
stage 1 + stage 2; this script trains the three other rows, evaluates all six and prints a Markdown table (and
`--json`). Each step is skipped when its output exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniretrieve.tiny.config import TinyRecipeConfig


def baseline_config(cfg: TinyRecipeConfig, pairs: Path, tokenizer: Path, out: Path) -> Any:
    """The CLIP-style row: the learnability gate's dual encoder (tiny/dual_encoder.py) with CLIP's 77-token limit
    in the recipe tokenizer's tokens, trained on the recipe's image–caption pairs at batch 128 for as many pairs as
    the MLLM's ViT pre-alignment, pretraining and stage 2 together (also what benchmarks/recipe_throughput.py
    times)."""
    from uniretrieve.tiny.clip_baseline import CLIP_TEXT_TOKENS
    from uniretrieve.tiny.config import PretrainConfig
    from uniretrieve.tiny.dual_encoder import DualEncoderConfig
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config

    s2 = load_config(
        Stage2Config, cfg.stage2_preset, cfg.stage2_overrides, model="x", output_dir="x", **{"data.root": "x"}
    )
    pairs_seen = (
        cfg.align_steps * cfg.align_batch_size
        + (cfg.pretrain_steps + cfg.pretrain_long_steps) * PretrainConfig.batch_size  # at the default batch
        + (s2.max_steps or 0) * s2.batch_size
    )
    batch = 128
    return DualEncoderConfig(
        data=str(pairs),
        tokenizer=str(tokenizer),
        output_dir=str(out),
        max_text_tokens=CLIP_TEXT_TOKENS,
        batch_size=batch,
        max_steps=max(1, pairs_seen // batch),
        seed=cfg.seed,
    )


def recipe_base(recipe: Path) -> Path:
    """The recipe's "no UniME training" model: the second pretraining phase's, else the first's."""
    long = recipe / "base-long" / "final"
    return long if (long / "config.json").exists() else recipe / "base" / "final"


def train_rows(recipe: Path, out: Path, cfg: TinyRecipeConfig, console: Any) -> dict[str, Any]:
    """Train the rows the recipe does not make; returns row name → model path or encoder."""
    from uniretrieve.tiny.clip_baseline import ClipStyleEncoder
    from uniretrieve.tiny.dual_encoder import train_dual_encoder
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config, run_stage2

    data = recipe / "data"
    base, stage1 = recipe_base(recipe), recipe / "stage1" / "merged"

    def stage2(name: str, start: Path, overrides: list[str]) -> Path:
        run = out / name
        if (run / "merged" / "config.json").exists():
            return run / "merged"
        s2 = load_config(
            Stage2Config,
            cfg.stage2_preset,
            [*cfg.stage2_overrides, *overrides],
            model=str(start),
            output_dir=str(run),
            seed=cfg.seed,
            **{"data.root": str(data / "mmeb-train"), "checkpoint.merge": True},
        )
        return Path(run_stage2(s2, console=console).merged_dir)

    clip_dir = out / "clip" / "final"
    if not (clip_dir / "clip_baseline.json").exists():
        pairs = data / "llava-pretrain"
        tokenizer = recipe / "base" / "processor"
        clip_dir, _ = train_dual_encoder(
            baseline_config(cfg, pairs, tokenizer, out / "clip"), console=console
        )
    return {
        "CLIP-style dual encoder": ClipStyleEncoder.from_pretrained(clip_dir),
        "base MLLM, prompted": base,
        "stage 1 only": stage1,
        "stage 2 only": stage2("stage2-only", base, []),
        "stage 1 + stage 2, in-batch negatives": stage2("stage2-inbatch", stage1, ["loss.in_batch=true"]),
        "stage 1 + stage 2 (unime-tiny)": recipe / "stage2" / "merged",
    }


def main() -> None:
    from rich.console import Console

    from uniretrieve.io import atomic_write_text
    from uniretrieve.tiny.config import read_recipe_json
    from uniretrieve.tiny.model_card import markdown_table
    from uniretrieve.tiny.recipe import evaluate_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--recipe", type=Path, required=True, help="the `uniretrieve train unime-tiny --output` folder"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    console = Console()
    cfg = read_recipe_json(args.recipe / "model" / "recipe.json")
    t0 = time.perf_counter()
    rows = train_rows(args.recipe, args.out, cfg, console)
    scores: dict[str, Any] = {}
    cache = args.out / "scores.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    for name, model in rows.items():
        if name in done:
            scores[name] = done[name]
            continue
        console.print(f"scoring {name}")
        if isinstance(model, Path):
            scores[name] = evaluate_model(model, args.recipe / "data")
        else:
            scores[name] = evaluate_model("clip-baseline", args.recipe / "data", encoder=model)
        done[name] = scores[name]
        atomic_write_text(cache, json.dumps(done))  # a kill mid-write keeps the rows scored so far
    table = markdown_table(scores)
    console.print(table)
    console.print(f"{time.perf_counter() - t0:.0f} s on {platform.processor() or platform.machine()}")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
