"""The language model's pre-alignment (recipe step `align_text`; `align_text_steps: 0` turns it off): before
generative pretraining, the new LLaVA's language model learns to embed the long captions — through the Encoder's one
embedding path, the last token of the E5-V prompt — against the pre-aligned dual encoder's image embeddings, frozen.

Why (benchmarks/RESULTS.md, "Which side holds long captions back"): the same causal language model, drawn afresh,
reaches the dual encoder's long-caption R@1 in 75 steps this way, while from the generatively pretrained base it
learns the captions slowly whether LoRA or every weight trains. The vision pre-alignment gives the ViT a
contrastive start; this step gives the language model one. Every language-model weight trains (a linear head maps
its width into the dual encoder's space; the head and its logit scale are saved beside the model, HEAD_FILE, and
never become part of the embedding); the ViT and the projector stay as they are. The result is a LLaVA folder the
pretraining starts from (`PretrainConfig.init`).

Alone it does not last: the 800 pretraining steps overwrite nearly all of it. The pretraining therefore keeps this
step's loss beside its own (`PretrainConfig.caption_align`, the same CaptionAlignTerm), which holds it
(docs/tiny-model.md, "The language model's pre-alignment").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from uniretrieve.io import atomic_dir
from uniretrieve.tiny.base import TinyBaseConfig, build_base, save_llava
from uniretrieve.tiny.clip_baseline import clip_loss
from uniretrieve.tiny.cpu import bf16_supported
from uniretrieve.tiny.pixels import PixelCache
from uniretrieve.tiny.pretrain_data import CaptionExample
from uniretrieve.train.batching import ShuffledEpochs
from uniretrieve.train.config import ConfigError, OptimConfig, StepCheckpointConfig
from uniretrieve.train.loop import StepFn, find_resume, run_steps, seed_everything
from uniretrieve.train.trainable import FullModel
from uniretrieve.types import Item


@dataclass(kw_only=True)
class TextAlignConfig:
    model: str
    """The LLaVA whose language model is aligned (the recipe's new base with the pre-aligned ViT)."""
    align: str
    """The pre-aligned dual encoder (`align/final`): its image embeddings are the frozen targets."""
    data: str
    """LLaVA-Pretrain json or folder: its image–caption pairs with at least `min_caption_words` words."""
    output_dir: str
    min_caption_words: int = 40
    batch_size: int = 64
    max_steps: int = 75
    seed: int = 0
    log_every: int = 10
    max_text_tokens: int = 320
    """The long captions run to ~250 prompted tokens; 320 cuts none (as stage2-tiny)."""
    logit_scale_max: float = 100.0
    precision: str = "bf16-autocast"
    """bf16 autocast where the CPU computes it natively, float32 elsewhere (tiny/cpu.py)."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.0, warmup_steps=10, max_grad_norm=1.0)
    )
    checkpoint: StepCheckpointConfig = field(
        default_factory=lambda: StepCheckpointConfig(every_steps=25, keep_last=1)
    )

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.max_steps < 1:
            raise ConfigError("align_text: batch_size must be >= 2 and max_steps >= 1")


class CaptionAligner(torch.nn.Module):
    """What trains: the LLaVA (its language model unfrozen), a linear head into the frozen space, a logit scale."""

    def __init__(self, llava: torch.nn.Module, width: int, embed_dim: int, scale_max: float) -> None:
        super().__init__()
        self.llava = llava
        self.head = torch.nn.Linear(width, embed_dim)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.log_scale_max = math.log(scale_max)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.log_scale_max)


def new_base(base: TinyBaseConfig, data: Path, processor_dir: Path, align: Path, out: Path) -> Path:
    """The LLaVA the pretraining would otherwise build (seeded, the recipe's tokenizer in `processor_dir`) with the
    pre-aligned ViT copied in, saved to `out` in float32: this step's starting point."""
    from uniretrieve.tiny.pretrain import load_vision_tower, make_processor

    model, processor = build_base(base, make_processor(data, processor_dir, base).tokenizer)
    load_vision_tower(model, align)
    with atomic_dir(out) as tmp:
        save_llava(model, processor, tmp, half=False)
    return out


def text_encoder(model: str, *, max_text_tokens: int = 320, precision: str = "bf16-autocast") -> Any:
    """The Encoder over `model` (no LoRA) with every language-model weight trainable, nothing else."""
    from uniretrieve.models.encoder import Encoder
    from uniretrieve.models.loading import load_backbone

    cpu = torch.device("cpu")
    native = precision == "bf16-autocast" and bf16_supported()
    enc = Encoder(
        load_backbone(model, device=cpu, dtype=torch.float32),
        device=cpu,
        dtype=torch.float32,
        prompt_regime="e5v",
        max_text_tokens=max_text_tokens,
        autocast_dtype=torch.bfloat16 if native else None,
    )
    enc.model.requires_grad_(False)
    for _, p in enc.parameters_under([enc.spec.language_model_path]):
        p.requires_grad_(True)
    enc.model.train()
    return enc


class CaptionAlignTerm:
    """The caption-alignment loss of a batch of long image–caption pairs: caption embeddings through the Encoder's
    path and the aligner's head, image embeddings of the frozen dual encoder (each image's computed once), CLIP's
    symmetric InfoNCE at the aligner's clamped logit scale. This step's whole objective, and the term the
    pretraining keeps beside its next-token loss (`PretrainConfig.caption_align`)."""

    def __init__(
        self, enc: Any, aligner: CaptionAligner, examples: list[CaptionExample], align: Path
    ) -> None:
        from uniretrieve.tiny.dual_encoder import image_processor_for, load_dual_encoder

        self.enc, self.aligner, self.examples = enc, aligner, examples
        self.dual, _, meta = load_dual_encoder(align)
        self.pixels = PixelCache(image_processor_for(meta["image_size"]))
        self.targets: dict[int, torch.Tensor] = {}

    def __call__(self, batch_ids: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        missing = [i for i in batch_ids if i not in self.targets]
        if missing:
            with torch.no_grad():
                v = self.dual.get_image_features(
                    self.pixels([self.examples[i].image for i in missing])
                ).float()
            self.targets.update(zip(missing, F.normalize(v, dim=-1), strict=True))
        prepared = self.enc.prepare([Item(text=self.examples[i].caption) for i in batch_ids])
        t = self.aligner.head(self.enc.embed(prepared.inputs).float())
        scale = self.aligner.scale()
        loss = clip_loss(t, torch.stack([self.targets[i] for i in batch_ids]), scale)
        tokens = float(prepared.inputs["attention_mask"].sum())
        return loss, {"logit_scale": float(scale.exp()), "align_tokens": tokens}


HEAD_FILE = "caption_align_head.safetensors"
"""The aligner's head and logit scale, saved beside the LLaVA so that the next run holding the alignment resumes
the head instead of drawing a new one (a random head's first gradients would pull the aligned states apart)."""


def save_head(aligner: CaptionAligner, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {f"head.{k}": v.detach().contiguous() for k, v in aligner.head.state_dict().items()}
    save_file({**state, "log_scale": aligner.log_scale.detach().reshape(1)}, str(folder / HEAD_FILE))


def load_head(aligner: CaptionAligner, folder: Path) -> bool:
    """Load `folder`'s saved head into `aligner` when there is one of the same shape; False otherwise."""
    from safetensors.torch import load_file

    path = folder / HEAD_FILE
    if not path.is_file():
        return False
    state = load_file(str(path))
    if state["head.weight"].shape != aligner.head.weight.shape:
        return False
    aligner.head.load_state_dict(
        {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    )
    with torch.no_grad():
        aligner.log_scale.copy_(state["log_scale"][0])
    return True


def make_aligner(enc: Any, align: Path, scale_max: float, start: Path | None = None) -> CaptionAligner:
    """The CaptionAligner over `enc`'s model into the dual encoder's space; its head from `start` when saved there."""
    from uniretrieve.tiny.dual_encoder import load_dual_encoder

    embed_dim = load_dual_encoder(align)[2]["sizes"]["embed_dim"]
    aligner = CaptionAligner(enc.model, enc.dim, embed_dim, scale_max)
    if start is not None:
        load_head(aligner, start)
    return aligner


def make_step_fn(term: CaptionAlignTerm) -> StepFn:
    def step(step: int, batch_ids: list[int]) -> dict[str, torch.Tensor | float]:
        loss, info = term(batch_ids)
        loss.backward()
        return {"loss": loss.detach(), **info}

    return step


def align_text(cfg: TextAlignConfig, *, console: Any | None = None) -> Path:
    """Run (or resume) the step; returns `output_dir/final`, a LLaVA folder (float16 weights, as the bases)."""
    from rich.console import Console

    from uniretrieve.tiny.dual_encoder import training_pairs

    console = console or Console()
    find_resume(cfg)
    seed_everything(cfg.seed)
    examples = training_pairs(cfg.data, min_caption_words=cfg.min_caption_words, batch_size=cfg.batch_size)
    enc = text_encoder(cfg.model, max_text_tokens=cfg.max_text_tokens, precision=cfg.precision)
    aligner = make_aligner(enc, Path(cfg.align), cfg.logit_scale_max)
    plan = ShuffledEpochs(len(examples), cfg.batch_size, seed=cfg.seed)
    step_fn = make_step_fn(CaptionAlignTerm(enc, aligner, examples, Path(cfg.align)))
    run_steps(cfg, FullModel(aligner), plan, step_fn, total=cfg.max_steps, console=console)
    final = Path(cfg.output_dir) / "final"
    with atomic_dir(final) as tmp:
        save_llava(enc.model.eval(), enc.processor, tmp)
        save_head(aligner, tmp)
    return final
