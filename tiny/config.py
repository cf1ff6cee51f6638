"""The configs of the tiny-model recipe's own commands: `PretrainConfig` (`uniretrieve train pretrain`) and
`TinyRecipeConfig` (`uniretrieve train unime-tiny`).

Each field's CLI spelling is declared next to its default (uniretrieve/config.py), so the commands' options and
defaults are these fields. Kept apart from pretrain.py and recipe.py, which import torch, so that building the CLI
stays light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from uniretrieve.config import no_cli, opt, strict_from_dict
from uniretrieve.tiny.base import TinyBaseConfig
from uniretrieve.train.config import ConfigError, OptimConfig, StepCheckpointConfig


@dataclass(kw_only=True)
class PretrainConfig:
    data: str = field(
        metadata=opt("LLaVA-Pretrain json or its folder (e.g. scenes/llava-pretrain).", "--data", type=Path)
    )
    """A LLaVA-Pretrain json or its folder (`uniretrieve scenes generate` writes `llava-pretrain/`)."""
    output_dir: str = field(
        metadata=opt(
            "Run folder (resumes from its checkpoints).",
            "--output",
            "-o",
            type=Path,
            deprecated=("--output-dir",),
        )
    )
    batch_size: int = field(default=32, metadata=opt("Image–caption pairs per step."))
    max_steps: int = field(default=500, metadata=opt("Optimizer steps."))
    """Optimizer steps (the shipped unime-tiny: 500; every entry point's default)."""
    max_caption_tokens: int = field(default=256, metadata=no_cli())
    seed: int = field(default=0, metadata=opt("Seed of the initialisation and the data order."))
    log_every: int = field(default=10, metadata=no_cli())
    vision_init: str | None = field(
        default=None,
        metadata=opt(
            "A CLIP-style run's final/ whose ViT (frozen) becomes the vision tower; without one the ViT stays "
            "random and, in our runs, the captioner never learned to read its images.",
            type=Path | None,
        ),
    )
    """A trained CLIP-style dual encoder (tiny/clip_baseline.py, same vision sizes) whose vision tower initialises
    the ViT: contrastive pre-alignment, so the captioner starts from image-dependent features."""
    init: str | None = field(
        default=None,
        metadata=opt(
            "A pretrained base (a pretraining run's final/) to continue from instead of a new model.",
            type=Path | None,
        ),
    )
    """Continue from this base (weights and processor) instead of building a new one: LLaVA's second phase, the
    detailed captions after the short ones. `vision_init` is then ignored (the base holds its ViT)."""
    max_caption_words: int | None = field(
        default=None,
        metadata=opt("Train only on captions of at most this many words (LLaVA-style alignment)."),
    )
    """Train only on captions of at most this many words, like LLaVA's feature-alignment stage (short BLIP
    captions). Measured on the generated scenes (probes/image_dependence.py): with the long captions' template
    sentences dominating the loss, the captioner learned the text prior and ignored its image (loss with a shuffled
    image equal to the loss with the right one); on short captions alone it learns to read the image."""
    bottleneck_min_words: int | None = field(default=None, metadata=no_cli())
    """Image rows whose caption has at least this many words are asked with the E5-V image prompt (the embedding's
    own) and their caption is generated through its last token alone (`tiny/captions.py` bottleneck_mask): the
    position the embedding is read from must then hold the whole description. None: off."""
    caption_align: str | None = field(default=None, metadata=no_cli())
    """A pre-aligned dual encoder (the recipe's `align/final`): beside the next-token loss, each step also holds a
    batch of long captions' embeddings (the Encoder's path, last token of the E5-V prompt) to its frozen image
    embeddings through a linear head — the language model's pre-alignment (tiny/align_text.py) kept through the
    pretraining, as CoCa trains a captioner and a contrastive objective together (Yu et al., 2022, arXiv
    2205.01917). Needs `init` (a saved LLaVA; its saved head, if any, is continued). None: off."""
    caption_align_weight: float = field(default=1.0, metadata=no_cli())
    """The weight of that term beside the next-token loss."""
    caption_align_batch_size: int = field(default=16, metadata=no_cli())
    """Long image–caption pairs per step in that term (at least 40 words, as the pre-alignment's). 16 holds the
    alignment (benchmarks/RESULTS.md) for 0.6 s of a step on the 2-core CPU; 32 would cost twice that."""
    freeze_vision: bool = field(default=True, metadata=no_cli())
    """Keep the ViT (from `vision_init`, else random) fixed and train the projector and the language model, as LLaVA
    freezes its pretrained CLIP encoder. Measured (benchmarks/RESULTS.md): only a contrastively pre-aligned frozen ViT
    made the captioner read its images; trained jointly from scratch or frozen at random initialisation, the caption
    loss with a shuffled image stayed equal to the loss with the right one."""
    precision: str = field(default="bf16-autocast", metadata=no_cli())
    """bf16-autocast: bf16 forward, float32 weights (uniretrieve/tiny/cpu.py); fp32: float32 throughout."""
    base: TinyBaseConfig = field(default_factory=TinyBaseConfig, metadata=no_cli())
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, warmup_steps=50, max_grad_norm=1.0),
        metadata=no_cli(),
    )
    checkpoint: StepCheckpointConfig = field(
        default_factory=lambda: StepCheckpointConfig(every_steps=200, keep_last=1), metadata=no_cli()
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1:
            raise ConfigError("batch_size and max_steps must be >= 1")
        if self.bottleneck_min_words is not None and self.bottleneck_min_words < 1:
            raise ConfigError("bottleneck_min_words must be >= 1 (or null: off)")
        if self.caption_align is not None and self.init is None:
            raise ConfigError("caption_align needs init: a saved LLaVA to start from (e.g. align-text/final)")
        if self.caption_align_batch_size < 2 or self.caption_align_weight < 0:
            raise ConfigError("caption_align_batch_size must be >= 2 and caption_align_weight >= 0")
        if self.max_caption_words is not None and self.max_caption_words < 1:
            raise ConfigError("max_caption_words must be >= 1 (or null for every caption)")


@dataclass(kw_only=True)
class TinyRecipeConfig:
    out: str = field(
        metadata=opt(
            "Recipe folder: data, base, stage1, stage2, model.",
            "--output",
            "-o",
            type=Path,
            deprecated=("--out",),
        )
    )
    seed: int = field(default=0, metadata=no_cli())
    test_seed: int = field(default=1, metadata=no_cli())
    train_scenes: int = field(default=5000, metadata=opt("Training scenes to generate."))
    test_scenes: int = field(default=1000, metadata=no_cli())
    base: TinyBaseConfig = field(default_factory=TinyBaseConfig, metadata=no_cli())
    """unime-tiny's architecture (tiny/base.py); the pre-alignment's image tower is its ViT."""
    align_steps: int = field(default=520, metadata=no_cli())
    """Steps of the vision pre-alignment at `align_batch_size` (the learnability gate's run: ≥ 80 % long-caption
    R@1 with this ViT by step 390, benchmarks/RESULTS.md)."""
    align_batch_size: int = field(default=128, metadata=no_cli())
    align_text_steps: int = field(default=60, metadata=no_cli())
    """Steps of the language model's pre-alignment on the long captions before pretraining (tiny/align_text.py);
    0 = none. Alone, the pretraining overwrites most of it; with `pretrain_caption_align` it is kept
    (docs/tiny-model.md)."""
    pretrain_steps: int = field(
        default=PretrainConfig.max_steps, metadata=opt("Generative pretraining steps.")
    )
    """The one default of the pretraining steps: PretrainConfig's."""
    pretrain_long_steps: int = field(default=300, metadata=no_cli())
    """Steps of the pretraining's second phase on every caption (recipe.step_pretrain_long); 0 = none."""
    pretrain_caption_align: bool = field(default=True, metadata=no_cli())
    """Keep the language model's caption alignment through both pretraining phases (PretrainConfig.caption_align,
    against `align/final`); from `align-text/final` when `align_text_steps`, else from the new base saved first."""
    pretrain_max_caption_words: int | None = field(default=20, metadata=no_cli())
    """LLaVA-style feature alignment on the short captions (≤ 15 words); see PretrainConfig.max_caption_words."""
    stage1_preset: str = field(default="stage1-tiny", metadata=no_cli())
    stage1_overrides: list[str] = field(
        default_factory=lambda: ["max_text_tokens=96", "max_steps=200"], metadata=no_cli()
    )
    stage2_preset: str = field(default="stage2-tiny", metadata=no_cli())
    stage2_overrides: list[str] = field(default_factory=list, metadata=no_cli())
    eval_batch_size: int = field(default=32, metadata=no_cli())

    def __post_init__(self) -> None:
        if isinstance(self.base, dict):  # read back from recipe.json
            self.base = TinyBaseConfig(**self.base)


RECIPE_EXTRA_KEYS = ("seconds",)
"""Keys recipe.json holds beside the config (the recipe's total time)."""


def read_recipe_json(path: Path) -> TinyRecipeConfig:
    """The TinyRecipeConfig a packaged model's recipe.json records; an unknown key is refused."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the recipe config {path}: {exc}") from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in RECIPE_EXTRA_KEYS}
    return strict_from_dict(TinyRecipeConfig, data, where=str(path))
