"""The `unime-tiny` recipe: scenes → ViT (and language-model) pre-alignment → generative pretraining → stage 1 →
stage 2 → scores.

One call (`uniretrieve train unime-tiny --output DIR`) reproduces the built-in model on a 2-core CPU. Every step writes
its own folder under `out` and is skipped when its result is already there, so an interrupted recipe resumes
(the training steps also resume mid-run from their checkpoints).

    out/data/      `uniretrieve scenes generate` (train seed 0; the test split from `test_seed`, never trained on)
    out/align/     a dual encoder (tiny/dual_encoder.py, the learnability gate's) on the long image–caption pairs,
                   with the MLLM's ViT as its image tower: that ViT, frozen, is the captioner's vision tower (LLaVA
                   starts from a contrastively trained CLIP ViT too)
    out/align-text/ the new LLaVA's language model pre-aligned on the long captions against align/'s image
                   embeddings (tiny/align_text.py; off at `align_text_steps` 0) → align-text/final, the pretraining's
                   start
    out/base/      generative pretraining on the short captions (tiny/pretrain.py; tokenizer in
                   base/processor), the caption alignment held beside it (`pretrain_caption_align`) → base/final
    out/base-long/ its second phase on every caption, long ones too → base-long/final: the "no UniME training"
                   model
    out/stage1/    `train stage1` (preset stage1-tiny, teacher all-MiniLM-L6-v2) → stage1/merged
    out/stage2/    `train stage2` (preset stage2-tiny, hard negatives) → stage2/merged
    out/model/     stage2/merged in float16 + MODEL_CARD.md + scores.json: what ships as `unime-tiny`
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uniretrieve.tiny.config import PretrainConfig, TinyRecipeConfig
from uniretrieve.tiny.pretrain import make_processor, pretrain

EVAL_BENCHMARKS = {
    "flickr30k": "short",
    "sharegpt4v": "sharegpt4v",
    "urban1k": "urban1k",
    "sugarcrepe": "sugarcrepe",
    "mmeb": "mmeb-eval",
}
"""Benchmark → folder of the generated test split in that benchmark's public layout."""


def _done(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def step_data(cfg: TinyRecipeConfig, console: Any) -> Path:
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = Path(cfg.out) / "data"
    console.rule("data: generated scenes")
    generate(
        GenerateConfig(
            out=str(out),
            seed=cfg.seed,
            test_seed=cfg.test_seed,
            train_scenes=cfg.train_scenes,
            test_scenes=cfg.test_scenes,
        )
    )
    return out


def align_config(cfg: TinyRecipeConfig, pairs: Path, tokenizer: Path, out: Path) -> Any:
    """The DualEncoderConfig of the recipe's vision pre-alignment: the learnability gate's dual encoder
    (tiny/dual_encoder.py) with the MLLM's own ViT as its image tower (`TinyBaseConfig`'s sizes), on the long
    captions, whole (also what benchmarks/recipe_throughput.py times)."""
    from uniretrieve.tiny.dual_encoder import DualEncoderConfig, DualEncoderSizes

    base = cfg.base
    return DualEncoderConfig(
        data=str(pairs),
        tokenizer=str(tokenizer),
        output_dir=str(out),
        min_caption_words=40,
        batch_size=cfg.align_batch_size,
        max_steps=cfg.align_steps,
        seed=cfg.seed,
        sizes=DualEncoderSizes(
            image_size=base.image_size,
            image_tower="vit",
            vit_patch=base.patch_size,
            vit_hidden=base.vision_hidden,
            vit_layers=base.vision_layers,
            vit_heads=base.vision_heads,
            vit_intermediate=base.vision_intermediate,
        ),
    )


def step_align(cfg: TinyRecipeConfig, data: Path, console: Any) -> Path:
    """The tokenizer, then a contrastive dual-encoder run whose ViT the captioner starts from."""
    from uniretrieve.tiny.dual_encoder import META_FILE, train_dual_encoder

    pairs = data / "llava-pretrain"
    make_processor(pairs, Path(cfg.out) / "base", cfg.base)
    out = Path(cfg.out) / "align"
    console.rule("vision pre-alignment (contrastive, long captions)")
    if (out / "final" / META_FILE).exists():
        return out / "final"
    tokenizer = Path(cfg.out) / "base" / "processor"
    return train_dual_encoder(align_config(cfg, pairs, tokenizer, out), console=console)[0]


def _pretrain_phase(
    cfg: TinyRecipeConfig, data: Path, folder: str, title: str, console: Any, **phase: Any
) -> Path:
    """One generative pretraining run of the recipe into `out/folder` (kept when done)."""
    out = Path(cfg.out) / folder
    console.rule(title)
    if _done(out / "final"):
        return out / "final"
    config = PretrainConfig(
        data=str(data / "llava-pretrain"), output_dir=str(out), seed=cfg.seed, base=cfg.base, **phase
    )
    return pretrain(config, console=console)


def step_align_text(cfg: TinyRecipeConfig, data: Path, align: Path, console: Any) -> Path | None:
    """The language model's pre-alignment on the long captions (tiny/align_text.py); None at 0 steps (off)."""
    if cfg.align_text_steps == 0:
        return None
    from uniretrieve.tiny.align_text import TextAlignConfig, align_text, new_base

    out = Path(cfg.out) / "align-text"
    console.rule("language-model pre-alignment (long captions → the pre-aligned image space)")
    if _done(out / "final"):
        return out / "final"
    start = new_base(cfg.base, data / "llava-pretrain", Path(cfg.out) / "base", align, out / "start")
    tcfg = TextAlignConfig(
        model=str(start),
        align=str(align),
        data=str(data / "llava-pretrain"),
        output_dir=str(out),
        max_steps=cfg.align_text_steps,
        seed=cfg.seed,
    )
    return align_text(tcfg, console=console)


def step_pretrain(cfg: TinyRecipeConfig, data: Path, align: Path, text: Path | None, console: Any) -> Path:
    """From a new LLaVA with the pre-aligned ViT or, when the language model was pre-aligned too, from that; with
    `pretrain_caption_align` the caption alignment is kept through the phase (a new base is saved first)."""
    start: dict[str, Any] = {"init": str(text)} if text is not None else {"vision_init": str(align)}
    if cfg.pretrain_caption_align:
        if text is None:
            from uniretrieve.tiny.align_text import new_base

            new = Path(cfg.out) / "base" / "start"
            if not _done(new):
                new_base(cfg.base, data / "llava-pretrain", Path(cfg.out) / "base", align, new)
            start = {"init": str(new)}
        start["caption_align"] = str(align)
    return _pretrain_phase(
        cfg,
        data,
        "base",
        "generative pretraining (image → short caption)",
        console,
        max_steps=cfg.pretrain_steps,
        max_caption_words=cfg.pretrain_max_caption_words,
        **start,
    )


def step_pretrain_long(cfg: TinyRecipeConfig, data: Path, base: Path, align: Path, console: Any) -> Path:
    """The pretraining's second phase, on every caption (the long ones too) from the short-caption base: as
    LLaVA's detailed descriptions come after its short-caption alignment. Off (the short-caption base) at 0 steps."""
    if cfg.pretrain_long_steps == 0:
        return base
    return _pretrain_phase(
        cfg,
        data,
        "base-long",
        "generative pretraining, second phase (image → short and long captions)",
        console,
        max_steps=cfg.pretrain_long_steps,
        init=str(base),
        caption_align=str(align) if cfg.pretrain_caption_align else None,
    )


def _unime_stage(
    cfg: TinyRecipeConfig,
    stage: str,
    title: str,
    config_cls: type,
    run: Any,
    preset: str,
    overrides: list[str],
    model: Path,
    data: dict[str, str],
    console: Any,
) -> Path:
    """One UniME stage of the recipe from its preset and overrides, merged into a full model (kept when done)."""
    from uniretrieve.train.config import load_config

    out = Path(cfg.out) / stage
    console.rule(title)
    if _done(out / "merged"):
        return out / "merged"
    stage_cfg = load_config(
        config_cls,
        preset,
        overrides,
        model=str(model),
        output_dir=str(out),
        seed=cfg.seed,
        **{**data, "checkpoint.merge": True},
    )
    return Path(run(stage_cfg, console=console).merged_dir)


def step_stage1(cfg: TinyRecipeConfig, base: Path, data: Path, console: Any) -> Path:
    from uniretrieve.train.stage1 import Stage1Config, run_stage1

    nli = {"data.path": str(data / "nli" / "nli_for_simcse.csv")}
    title = "stage 1: textual discriminative knowledge distillation"
    return _unime_stage(
        cfg,
        "stage1",
        title,
        Stage1Config,
        run_stage1,
        cfg.stage1_preset,
        cfg.stage1_overrides,
        base,
        nli,
        console,
    )


def step_stage2(cfg: TinyRecipeConfig, stage1: Path, data: Path, console: Any) -> Path:
    from uniretrieve.train.stage2 import Stage2Config, run_stage2

    mmeb = {"data.root": str(data / "mmeb-train")}
    title = "stage 2: hard-negative enhanced instruction tuning"
    return _unime_stage(
        cfg,
        "stage2",
        title,
        Stage2Config,
        run_stage2,
        cfg.stage2_preset,
        cfg.stage2_overrides,
        stage1,
        mmeb,
        console,
    )


def evaluate_model(
    model: str | Path, data: Path, *, batch_size: int = 32, encoder: Any = None
) -> dict[str, Any]:
    """Scores of a model on the generated test split, per benchmark (the model card's and the ablation's table).

    encoder: instead of loading `model`, a prompt-free encoder (the CLIP-style baseline) used for every benchmark.
    """
    from uniretrieve.eval.benchmarks import get_benchmark
    from uniretrieve.eval.runner import EvalConfig, run_eval

    scores: dict[str, Any] = {}
    for bench, folder in EVAL_BENCHMARKS.items():
        if encoder is not None:
            encoder.prompt_regime = get_benchmark(bench).prompt_regime
        res = run_eval(
            EvalConfig(benchmark=bench, data=str(data / folder), model=str(model), batch_size=batch_size),
            encoder=encoder,
            show_progress=False,
        )
        scores[bench] = res["scores"]
    return scores


def package(stage2: Path, out: Path, scores: dict[str, Any], cfg: TinyRecipeConfig, seconds: float) -> Path:
    """float16 copy of the final model with its processor, scores and model card."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from uniretrieve.io import atomic_dir
    from uniretrieve.tiny.model_card import model_card

    with atomic_dir(out) as tmp:
        LlavaForConditionalGeneration.from_pretrained(stage2, dtype=torch.float16).save_pretrained(tmp)
        AutoProcessor.from_pretrained(stage2).save_pretrained(tmp)
        (tmp / "scores.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
        (tmp / "recipe.json").write_text(json.dumps({**asdict(cfg), "seconds": round(seconds)}, indent=2))
        (tmp / "MODEL_CARD.md").write_text(model_card(scores, cfg=asdict(cfg), seconds=seconds))
    return out


class StepTimes:
    """Seconds of each recipe step that did its work, kept in `out/step_seconds.json` across resumed runs, so the
    model card reports the whole recipe's time even when it finished in a later run."""

    def __init__(self, out: Path) -> None:
        self.path = out / "step_seconds.json"
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, already_done: bool, fn: Any) -> Any:
        t0 = time.perf_counter()
        result = fn()
        if not already_done:
            from uniretrieve.io import atomic_write_text

            self.seconds[name] = round(time.perf_counter() - t0, 1)
            atomic_write_text(self.path, json.dumps(self.seconds, indent=2))
        return result

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


RECIPE_STEPS = ("data", "align", "align_text", "pretrain", "pretrain_long", "stage1", "stage2", "eval")
"""The recipe's steps in order, as `step_seconds.json` names them."""


def run_recipe(cfg: TinyRecipeConfig, *, console: Any | None = None, until: str = "eval") -> Path:
    """Run (or resume) the recipe; `until` stops after that step and returns its folder (the ablation needs
    the recipe only up to stage 1). The config is saved as `out/recipe.json` before the first step."""
    from rich.console import Console

    from uniretrieve.io import atomic_write_text

    if until not in RECIPE_STEPS:
        raise ValueError(f"unknown recipe step {until!r}; one of {', '.join(RECIPE_STEPS)}")
    console = console or Console()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    saved, text = root / "recipe.json", json.dumps(asdict(cfg), indent=2)
    if not saved.exists() or saved.read_text() != text:  # the ablation asks for a step at a time
        atomic_write_text(saved, text)
    times = StepTimes(root)
    t0 = time.perf_counter()
    done = {
        "data": (root / "data" / "config.json").exists(),
        "align": (root / "align" / "final" / "clip_baseline.json").exists(),
        "align_text": cfg.align_text_steps == 0 or _done(root / "align-text" / "final"),
        "pretrain": _done(root / "base" / "final"),
        "pretrain_long": cfg.pretrain_long_steps == 0 or _done(root / "base-long" / "final"),
        "stage1": _done(root / "stage1" / "merged"),
        "stage2": _done(root / "stage2" / "merged"),
    }
    r: dict[str, Path] = {}
    steps: dict[str, Any] = {
        "data": lambda: step_data(cfg, console),
        "align": lambda: step_align(cfg, r["data"], console),
        "align_text": lambda: step_align_text(cfg, r["data"], r["align"], console),
        "pretrain": lambda: step_pretrain(cfg, r["data"], r["align"], r["align_text"], console),
        "pretrain_long": lambda: step_pretrain_long(cfg, r["data"], r["pretrain"], r["align"], console),
        "stage1": lambda: step_stage1(cfg, r["pretrain_long"], r["data"], console),
        "stage2": lambda: step_stage2(cfg, r["stage1"], r["data"], console),
    }
    for name, fn in steps.items():
        r[name] = times.run(name, done[name], fn)
        if name == until:
            return r[name]
    stage2, data = r["stage2"], r["data"]
    console.rule("scores on the held-out test split")
    scores = times.run("eval", False, lambda: evaluate_model(stage2, data, batch_size=cfg.eval_batch_size))
    out = package(stage2, root / "model", scores, cfg, times.total)
    console.print(
        f"unime-tiny → {out} ({time.perf_counter() - t0:.0f} s in this run, {times.total:.0f} s in all)"
    )
    return out


def install(model_dir: Path, target: Path) -> Path:
    """Copy a packaged model into the package's weights folder (what `Encoder.from_pretrained("unime-tiny")` reads)."""
    from uniretrieve.io import atomic_dir

    with atomic_dir(target) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    return target
