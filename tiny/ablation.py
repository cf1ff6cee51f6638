"""The paper's ablation, measured on generated scenes (UniME Table 5 analogue;
docs/benchmarks.md#published-numbers).

    python -m uniretrieve.tiny.ablation --recipe runs/unime-tiny --out runs/ablation

Rows (all scored on the recipe's held-out test split, a seed never used in training):
  CLIP-style dual encoder   the learnability gate's encoder (benchmarks/learnability.py) with a 77-token text
                            limit, CLIP loss on the same image–caption pairs, as many pairs as the MLLM's two
                            pre-alignments, pretraining (with its alignment term) and stage 2 together
  base MLLM, prompted       the generatively pretrained base, E5-V prompts, no UniME training
  stage 1 only              base → stage 1
  stage 2 only              base → stage 2
  stage 2, in-batch         base → stage 1 → stage 2 with plain in-batch InfoNCE instead of hard negatives
  stage 1 + stage 2         = unime-tiny
The recipe (`uniretrieve train unime-tiny --output runs/unime-tiny`) provides the data, the base, stage 1 and
stage 1 + stage 2: where the `--recipe` folder lacks a step a row needs, this script runs the recipe up to that step
(resuming it; a new folder gets the recipe's defaults). It trains the two other stage-2 rows itself, scores each row
as soon as it exists, then prints a Markdown table with each row's training seconds (the recipe steps it builds on
plus its own run; `--json`). Every row's training resumes from its checkpoints and scored rows are kept
(`out/scores.json`), so the ablation can span several working sessions: rerun the same command. The rows run in the
table's order, the recipe's own stage 2 last: a session that has the time for only some rows gets the ones the
recipe does not make.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniretrieve.tiny.config import TinyRecipeConfig


def baseline_config(cfg: TinyRecipeConfig, pairs: Path, tokenizer: Path, out: Path) -> Any:
    """The CLIP-style row: the learnability gate's dual encoder (tiny/dual_encoder.py) with CLIP's 77-token limit
    in the recipe tokenizer's tokens, trained on the recipe's image–caption pairs at batch 128 for as many pairs as
    the MLLM's ViT and language-model pre-alignments, pretraining (its alignment term's pairs too) and stage 2 together (also what benchmarks/recipe_throughput.py
    times)."""
    from uniretrieve.tiny.align_text import TextAlignConfig
    from uniretrieve.tiny.clip_baseline import CLIP_TEXT_TOKENS
    from uniretrieve.tiny.config import PretrainConfig
    from uniretrieve.tiny.dual_encoder import DualEncoderConfig
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config

    s2 = load_config(
        Stage2Config, cfg.stage2_preset, cfg.stage2_overrides, model="x", output_dir="x", **{"data.root": "x"}
    )
    pretrain_steps = cfg.pretrain_steps + cfg.pretrain_long_steps
    pairs_seen = (
        cfg.align_steps * cfg.align_batch_size
        + cfg.align_text_steps * TextAlignConfig.batch_size
        + pretrain_steps * PretrainConfig.batch_size  # at the default batch
        + (pretrain_steps * PretrainConfig.caption_align_batch_size if cfg.pretrain_caption_align else 0)
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


def recipe_config(recipe: Path) -> TinyRecipeConfig:
    """The recipe folder's config: its packaged model's recipe.json, else the one the recipe saves when it starts,
    else the recipe's defaults (a new folder); `out` is the folder given, wherever the run was made."""
    from uniretrieve.tiny.config import TinyRecipeConfig, read_recipe_json

    for path in (recipe / "model" / "recipe.json", recipe / "recipe.json"):
        if path.exists():
            cfg = read_recipe_json(path)
            break
    else:
        cfg = TinyRecipeConfig(out=str(recipe))
    cfg.out = str(recipe)
    return cfg


_BASE = ("align", "align_text", "pretrain", "pretrain_long")
RECIPE_STEPS = {
    "base MLLM, prompted": _BASE,
    "stage 1 only": (*_BASE, "stage1"),
    "stage 2 only": _BASE,
    "stage 1 + stage 2, in-batch negatives": (*_BASE, "stage1"),
    "stage 1 + stage 2 (unime-tiny)": (*_BASE, "stage1", "stage2"),
}
"""Which of the recipe's steps (`step_seconds.json`) a row's training time includes; the rows this script trains
add their own run's seconds (the CLIP-style row has only its own)."""
OPTIONAL_STEPS = ("align_text",)
"""Steps a recipe may run without (absent from `step_seconds.json` when off)."""


class RowSeconds:
    """Training seconds of a row this script trains, summed over the invocations that worked on it
    (`out/<row>/seconds.json`): a run resumed in a later session still reports its whole training time. A process
    killed without unwinding (SIGKILL) loses the seconds of that invocation."""

    def __init__(self, run: Path) -> None:
        self.path = run / "seconds.json"

    def read(self) -> float | None:
        return json.loads(self.path.read_text())["seconds"] if self.path.exists() else None

    def timed(self, done: bool, train: Callable[[], Path]) -> Path:
        if done:
            return train()
        t0 = time.perf_counter()
        try:
            return train()
        finally:
            from uniretrieve.io import atomic_write_text

            self.path.parent.mkdir(parents=True, exist_ok=True)
            total = (self.read() or 0.0) + time.perf_counter() - t0
            atomic_write_text(self.path, json.dumps({"seconds": round(total, 1)}))


def row_trainers(
    recipe: Path, out: Path, cfg: TinyRecipeConfig, console: Any
) -> dict[str, Callable[[], Any]]:
    """Row name → a function that trains the row if needed (resuming its run) and returns its model: a path, or
    the CLIP-style encoder. The recipe's own rows (the base, stage 1, unime-tiny) are its steps' results."""
    from uniretrieve.tiny.recipe import run_recipe

    data = recipe / "data"

    def upto(step: str) -> Path:
        """The recipe's result of `step`, running (or resuming) the recipe up to it where it is missing."""
        return run_recipe(cfg, console=console, until=step)

    def stage2(name: str, start: Path, overrides: list[str]) -> Path:
        from uniretrieve.train.config import load_config
        from uniretrieve.train.stage2 import Stage2Config, run_stage2

        run = out / name
        done = (run / "merged" / "config.json").exists()

        def train() -> Path:
            if done:
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

        return RowSeconds(run).timed(done, train)

    def clip() -> Any:
        from uniretrieve.tiny.clip_baseline import ClipStyleEncoder
        from uniretrieve.tiny.dual_encoder import train_dual_encoder

        final = out / "clip" / "final"
        done = (final / "clip_baseline.json").exists()

        def train() -> Path:
            if done:
                return final
            config = baseline_config(
                cfg, data / "llava-pretrain", recipe / "base" / "processor", out / "clip"
            )
            return train_dual_encoder(config, console=console)[0]

        if not done:
            upto("pretrain")  # the pairs and the recipe's tokenizer, outside the row's own seconds
        return ClipStyleEncoder.from_pretrained(RowSeconds(out / "clip").timed(done, train))

    return {
        "CLIP-style dual encoder": clip,
        "base MLLM, prompted": lambda: upto("pretrain_long"),
        "stage 1 only": lambda: upto("stage1"),
        "stage 2 only": lambda: stage2("stage2-only", upto("pretrain_long"), []),
        "stage 1 + stage 2, in-batch negatives": lambda: stage2(
            "stage2-inbatch", upto("stage1"), ["loss.in_batch=true"]
        ),
        "stage 1 + stage 2 (unime-tiny)": lambda: upto("stage2"),
    }


OWN_RUN = {
    "CLIP-style dual encoder": "clip",
    "stage 2 only": "stage2-only",
    "stage 1 + stage 2, in-batch negatives": "stage2-inbatch",
}


def row_seconds(name: str, recipe: Path, out: Path) -> float | None:
    """A row's training seconds: the recipe steps it builds on plus its own run's; None where one is unknown."""
    steps = recipe / "step_seconds.json"
    recipe_s = json.loads(steps.read_text()) if steps.exists() else {}
    total = 0.0
    for step in RECIPE_STEPS.get(name, ()):
        if step not in recipe_s:
            if step in OPTIONAL_STEPS:
                continue
            return None
        total += recipe_s[step]
    if name in OWN_RUN:
        own = RowSeconds(out / OWN_RUN[name]).read()
        if own is None:
            return None
        total += own
    return total


ROW_KEYS = {
    "clip": "CLIP-style dual encoder",
    "base": "base MLLM, prompted",
    "stage1": "stage 1 only",
    "stage2-only": "stage 2 only",
    "stage2-inbatch": "stage 1 + stage 2, in-batch negatives",
    "unime-tiny": "stage 1 + stage 2 (unime-tiny)",
}
"""`--rows` names → the table's rows, in the table's order."""


def _keep(cache: Path, name: str, scores: dict[str, Any]) -> None:
    """Add one row to `out/scores.json` under a lock: ablation processes training different rows (`--rows`) side by
    side share the file. Written atomically: a kill mid-write keeps the rows scored so far."""
    import fcntl

    from uniretrieve.io import atomic_write_text

    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_name("scores.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(cache.read_text()) if cache.exists() else {}
        rows[name] = scores
        atomic_write_text(cache, json.dumps(rows))


def run_ablation(
    recipe: Path, out: Path, console: Any, *, rows: list[str] | None = None, final: Path | None = None
) -> dict[str, Any]:
    """Train and score each row in turn; a row's scores are kept in `out/scores.json` as soon as they exist, so a
    run stopped at any point (e.g. at the end of a working session) resumes with the next row's training.

    rows: only these rows (ROW_KEYS names), e.g. two stage-2 rows in two processes at once.
    final: the stage 1 + stage 2 row's model instead of the recipe's own stage 2 (e.g. the shipped `unime-tiny`,
    a build of the same recipe) when there is no time for a third stage-2 run.
    Returns every row scored so far, by this process or another, in the table's order."""
    from uniretrieve.tiny.recipe import evaluate_model

    cfg = recipe_config(recipe)
    cache = out / "scores.json"
    wanted = {ROW_KEYS[k] for k in rows} if rows else set(ROW_KEYS.values())
    trainers = row_trainers(recipe, out, cfg, console)
    if final is not None:
        trainers["stage 1 + stage 2 (unime-tiny)"] = lambda: final
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for name, trainer in trainers.items():
        if name in done or name not in wanted:
            continue
        model = trainer()
        console.print(f"scoring {name}")
        if isinstance(model, Path):
            scores = evaluate_model(model, recipe / "data")
        else:
            scores = evaluate_model("clip-baseline", recipe / "data", encoder=model)
        _keep(cache, name, scores)
    kept = json.loads(cache.read_text()) if cache.exists() else {}
    return {name: kept[name] for name in trainers if name in kept}


def main() -> None:
    from rich.console import Console

    from uniretrieve.models.names import shipped_dir
    from uniretrieve.tiny.model_card import markdown_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--recipe", type=Path, required=True, help="the `uniretrieve train unime-tiny --output` folder"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--rows",
        nargs="+",
        choices=list(ROW_KEYS),
        default=None,
        help="only these rows (default: all, in the table's order)",
    )
    ap.add_argument(
        "--card",
        type=Path,
        default=None,
        help="a model card (e.g. uniretrieve/weights/unime-tiny/MODEL_CARD.md) whose ablation section is set to "
        "the table",
    )
    ap.add_argument(
        "--final",
        default=None,
        help="the stage 1 + stage 2 row's model folder, or `unime-tiny` for the shipped one, instead of the "
        "recipe's own stage 2 (its training seconds are then not known here)",
    )
    args = ap.parse_args()
    final = None
    if args.final is not None:
        final = shipped_dir("unime-tiny") if args.final == "unime-tiny" else Path(args.final)
        if not (final / "config.json").exists():
            ap.error(f"--final {args.final}: no model there (config.json missing)")
    console = Console()
    t0 = time.perf_counter()
    from uniretrieve.cli.options import known_errors

    try:
        scores = run_ablation(args.recipe, args.out, console, rows=args.rows, final=final)
    except known_errors() as exc:  # bad input (e.g. an unreadable recipe.json): one line, exit 2
        ap.error(" ".join(str(exc).split()))
    seconds = {name: row_seconds(name, args.recipe, args.out) for name in scores}
    if final is not None:
        seconds[ROW_KEYS["unime-tiny"]] = None
    table = markdown_table(scores, seconds=seconds)
    console.print(table)
    if args.card is not None:
        from uniretrieve.io import atomic_write_text
        from uniretrieve.tiny.model_card import with_ablation

        command = "python -m uniretrieve.tiny.ablation " + " ".join(sys.argv[1:])
        atomic_write_text(args.card, with_ablation(args.card.read_text(), table, command=command))
    console.print(f"{time.perf_counter() - t0:.0f} s on {platform.processor() or platform.machine()}")
    if args.json:
        args.json.write_text(json.dumps({"scores": scores, "training_seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
