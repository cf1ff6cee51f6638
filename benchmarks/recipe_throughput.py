"""Samples/s of every training step of the `unime-tiny` recipe, at the recipe's own settings.

Each step kind runs through the code the recipe runs (`uniretrieve train unime-tiny`, tiny/recipe.py) for a fixed
number of optimizer steps, in a fresh folder, and its speed is read from the loop's metrics.jsonl (the seconds of
each step: data preparation inside the step function, forward, backward, optimizer; checkpoints excluded):

    align      the CLIP-style vision pre-alignment (step_align's settings)
    pretrain   generative pretraining (step_pretrain's settings, from that align run's ViT)
    stage1     stage 1 on the pretrained base (preset and overrides of TinyRecipeConfig)
    stage2     stage 2 on the pretrained base (preset stage2-tiny; a base instead of stage 1's merge: same shapes)
    baseline   the ablation's CLIP-style dual encoder (tiny/ablation.py's settings)

A sample is one image–caption pair (align, pretrain, baseline), one text (stage 1) or one query–target pair
(stage 2). The first step of each kind is left out (one-time allocation and warm-up); the figure is the batch size
over the median step time (steadier than the mean on a shared machine), the mean is reported beside it.

    python -m benchmarks.recipe_throughput --work /tmp/rt --json-out recipe_throughput.json

Without --data a corpus of `--scenes` training scenes (seed 0) is generated under the work folder: the speed of a
step does not depend on how many scenes there are, only on their caption lengths and images, which do not change.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("align", "pretrain", "stage1", "stage2", "baseline")
DEFAULT_STEPS = {"align": 8, "pretrain": 8, "stage1": 6, "stage2": 4, "baseline": 8}
"""Optimizer steps per kind: 20–150 s each on the shared 2-core dev VM before the throughput work."""


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def _summary(run_dir: Path, samples_per_step: int, wall: float) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    timed = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    extra = {k: statistics.fmean(r[k] for r in rows) for k in ("tokens", "padded_tokens") if k in rows[0]}
    out: dict[str, Any] = {
        "steps": len(rows),
        "samples_per_step": samples_per_step,
        "median_step_s": statistics.median(timed),
        "mean_step_s": statistics.fmean(timed),
        "samples_per_s": samples_per_step / statistics.median(timed),
        "samples_per_s_mean": samples_per_step / statistics.fmean(timed),
        "first_step_s": rows[0]["seconds"],
        "wall_s_with_setup": wall,
        "loss_first": rows[0]["loss"],
        "loss_last": rows[-1]["loss"],
    }
    if extra:  # tokens the model computed per sample: real ones and with the batch's padding
        out["tokens_per_sample"] = extra.get("tokens", 0) / samples_per_step
        out["padded_tokens_per_sample"] = extra.get("padded_tokens", 0) / samples_per_step
    return out


def run_kind(kind: str, data: Path, work: Path, steps: int, precision: str | None = None) -> dict[str, Any]:
    """One step kind at the recipe's settings for `steps` optimizer steps; its speed summary.

    precision: instead of the recipe's, "fp32" or "bf16-autocast" (to measure what autocast gives)."""
    from uniretrieve.tiny.config import PretrainConfig, TinyRecipeConfig
    from uniretrieve.tiny.pretrain import make_processor
    from uniretrieve.train.config import StepCheckpointConfig

    recipe = TinyRecipeConfig(out=str(work))
    processor_dir = work / "tokenizer"
    make_processor(data / "llava-pretrain", processor_dir)
    run_dir = work / kind
    shutil.rmtree(run_dir, ignore_errors=True)
    no_ckpt = StepCheckpointConfig(every_steps=0, keep_last=1)
    console = _quiet_console()
    t0 = time.perf_counter()
    if kind in ("align", "baseline"):
        from uniretrieve.tiny.ablation import baseline_config
        from uniretrieve.tiny.recipe import align_config

        make = align_config if kind == "align" else baseline_config
        cfg = make(recipe, data / "llava-pretrain", processor_dir / "processor", run_dir)
        cfg.max_steps, cfg.checkpoint = steps, no_ckpt
        if precision:
            cfg.precision = precision
        # Both are the gate's dual encoder now (align: with the MLLM's ViT as its image tower); a transformers
        # CLIPModel (tiny/clip_baseline.py) before the throughput work and the 64-px recipe.
        from uniretrieve.tiny.dual_encoder import train_dual_encoder

        train_dual_encoder(cfg, console=console)
        per_step = cfg.batch_size
    elif kind == "pretrain":
        from uniretrieve.tiny.pretrain import pretrain

        align = work / "align" / "final"
        if not align.exists():
            run_kind("align", data, work, 1)
        cfg = PretrainConfig(
            data=str(data / "llava-pretrain"),
            output_dir=str(run_dir),
            seed=recipe.seed,
            max_steps=steps,
            vision_init=str(align),
            max_caption_words=recipe.pretrain_max_caption_words,
            checkpoint=no_ckpt,
            **({"precision": precision} if precision else {}),
        )
        pretrain(cfg, console=console)
        per_step = cfg.batch_size
    else:
        per_step = _run_stage(kind, recipe, data, work, run_dir, steps, console, precision)
    return _summary(run_dir, per_step, time.perf_counter() - t0)


def _run_stage(
    kind: str,
    recipe: Any,
    data: Path,
    work: Path,
    run_dir: Path,
    steps: int,
    console: Any,
    precision: str | None,
) -> int:
    from uniretrieve.train.config import load_config

    base = work / "pretrain" / "final"
    if not base.exists():
        run_kind("pretrain", data, work, 1)
    if kind == "stage1":
        from uniretrieve.train.stage1 import Stage1Config as cls
        from uniretrieve.train.stage1 import run_stage1 as run

        preset, overrides = recipe.stage1_preset, recipe.stage1_overrides
        extra = {"data.path": str(data / "nli" / "nli_for_simcse.csv")}
    else:
        from uniretrieve.train.stage2 import Stage2Config as cls
        from uniretrieve.train.stage2 import run_stage2 as run

        preset, overrides = recipe.stage2_preset, recipe.stage2_overrides
        extra = {"data.root": str(data / "mmeb-train")}
    cfg = load_config(
        cls,
        preset,
        [*overrides, f"max_steps={steps}", *([f"precision={precision}"] if precision else [])],
        model=str(base),
        output_dir=str(run_dir),
        seed=recipe.seed,
        **{**extra, "checkpoint.merge": False, "checkpoint.every_steps": 0},
    )
    run(cfg, console=console)
    return int(cfg.batch_size)


def machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_before": os.getloadavg(),
    }


def ensure_data(data: Path | None, work: Path, scenes: int) -> Path:
    if data is not None:
        return data
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = work / "data"
    if not (out / "config.json").exists():
        generate(GenerateConfig(out=str(out), seed=0, test_seed=1, train_scenes=scenes, test_scenes=50))
    return out


def main(argv: list[str] | None = None, *, run: Callable[..., dict[str, Any]] = run_kind) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="Scratch folder (runs are recreated in it).")
    p.add_argument("--data", type=Path, default=None, help="A generated corpus (default: generate one).")
    p.add_argument("--scenes", type=int, default=1000, help="Training scenes of the generated corpus.")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--steps", type=int, default=None, help="Steps of every kind (default: per kind).")
    p.add_argument(
        "--omp-wait",
        choices=("passive", "default"),
        default="passive",
        help="passive: the recipe commands' setting (uniretrieve/tiny/cpu.py); default: libgomp's spinning.",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    p.add_argument(
        "--precision", choices=("fp32", "bf16-autocast"), default=None, help="Instead of the recipe's."
    )
    p.add_argument("--label", default="", help="A name for this configuration, kept in the JSON.")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.omp_wait == "passive":
        from uniretrieve.tiny.cpu import passive_omp_wait

        if not passive_omp_wait():
            print("warning: torch was imported before the OpenMP wait policy could be set", flush=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = ensure_data(args.data, args.work, args.scenes)
    result: dict[str, Any] = {
        "label": args.label,
        "omp_wait": args.omp_wait,
        "precision": args.precision or "recipe",
        "machine": machine(),
        "kinds": {},
    }
    for kind in args.kinds:
        steps = args.steps or DEFAULT_STEPS[kind]
        result["kinds"][kind] = row = run(kind, data, args.work, steps, args.precision)
        print(
            f"{kind:9s} {row['samples_per_s']:8.1f} samples/s  (median step {row['median_step_s']:.2f} s × "
            f"{row['samples_per_step']}, {row['steps']} steps, loss {row['loss_first']:.3f} → {row['loss_last']:.3f})",
            flush=True,
        )
    if args.json_out:
        from uniretrieve.io import atomic_write_json

        atomic_write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
