"""The small dual encoder of the learnability gate and of the ablation's CLIP-style row.

A CNN image tower (4 conv blocks; the last feature map is flattened, not averaged, so where a shape sits survives
into the embedding: the captions name grid cells) and a bidirectional transformer text tower over the recipe's
BPE tokens with masked mean pooling, trained with the symmetric InfoNCE loss (`clip_loss`) and a learnable logit
scale clamped at `logit_scale_max` (CLIP clamps at 100; without a clamp and a schedule the gate's prototype
collapsed mid-run). `max_text_tokens=None` reads the whole caption (the gate); 77 is CLIP's limit (the ablation's
CLIP-style row: the same encoder, the tail of a long caption cut off).

Images go through the recipe's CLIPImageProcessor at `image_size` (the pixels a LLaVA processor at that size
gives the MLLM). Training runs through the one training loop (train/loop.py run_steps); every training image is
decoded and preprocessed once (PixelCache), every caption tokenized once.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from uniretrieve.io import atomic_dir, atomic_write_text
from uniretrieve.tiny.clip_baseline import length_sorted
from uniretrieve.tiny.cpu import autocast
from uniretrieve.tiny.pixels import PixelCache
from uniretrieve.tiny.pretrain_data import CaptionExample, read_llava_pretrain
from uniretrieve.train.batching import ShuffledEpochs
from uniretrieve.train.config import ConfigError, OptimConfig, StepCheckpointConfig
from uniretrieve.train.loop import StepFn, find_resume, run_steps, seed_everything
from uniretrieve.train.trainable import FullModel

META_FILE = "clip_baseline.json"
"""Written beside every trained dual encoder (also the CLIP-ViT pre-alignment's): what ClipStyleEncoder loads."""


@dataclass(kw_only=True)
class DualEncoderSizes:
    image_size: int = 64
    image_tower: Literal["cnn", "vit"] = "cnn"
    """cnn: `channels` conv blocks, flattened; vit: a CLIP ViT (`vit_*`), its pooled output: the tower a LLaVA can
    take, so a gate-trained ViT could initialise the MLLM's (tiny/pretrain.py load_vision_tower)."""
    channels: tuple[int, ...] = (32, 64, 128, 128)
    vit_patch: int = 8
    vit_hidden: int = 192
    vit_layers: int = 4
    vit_heads: int = 3
    vit_intermediate: int | None = None
    """The ViT's MLP width; None = 4 × vit_hidden (TinyBaseConfig's convention)."""
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    embed_dim: int = 256
    max_positions: int = 512
    """Learned text positions; captions longer than this are cut (the generated long captions stay under 320)."""
    vocab_size: int = 4096


@dataclass(kw_only=True)
class DualEncoderConfig:
    data: str
    """LLaVA-Pretrain json or folder (the recipe's image–caption pairs)."""
    tokenizer: str
    """A folder with the recipe's tokenizer (e.g. base/processor)."""
    output_dir: str
    min_caption_words: int = 0
    """Train only on captions of at least this many words (the gate: the long captions, 80–200 words)."""
    max_text_tokens: int | None = None
    """None: the whole caption; 77: CLIP's limit (the ablation's CLIP-style row)."""
    batch_size: int = 128
    max_steps: int = 300
    seed: int = 0
    log_every: int = 10
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    precision: Literal["fp32", "bf16-autocast"] = "bf16-autocast"
    text_chunks: int = 4
    """Length-sorted groups of the text forward (`DualEncoder.get_text_features`): less padding, same vectors."""
    sizes: DualEncoderSizes = field(default_factory=DualEncoderSizes)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-3,
            weight_decay=0.05,
            warmup_steps=30,
            schedule="cosine",
            min_lr_ratio=0.02,
            max_grad_norm=1.0,
        )
    )
    checkpoint: StepCheckpointConfig = field(
        default_factory=lambda: StepCheckpointConfig(every_steps=100, keep_last=1)
    )

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.max_steps < 1:
            raise ConfigError("batch_size must be >= 2 and max_steps >= 1")
        if isinstance(self.sizes, dict):
            self.sizes = DualEncoderSizes(**self.sizes)
        if isinstance(self.sizes.channels, list):
            self.sizes.channels = tuple(self.sizes.channels)


class DualEncoder(nn.Module):
    """Image and text towers into one `embed_dim` space; `get_*_features` as CLIPModel names them."""

    def __init__(
        self, sizes: DualEncoderSizes, *, pad_id: int, logit_scale_init: float, logit_scale_max: float
    ):
        super().__init__()
        self.sizes, self.pad_id, self.logit_scale_max = sizes, pad_id, logit_scale_max
        if sizes.image_tower == "vit":
            from transformers import CLIPVisionModel

            from uniretrieve.tiny.base import TinyBaseConfig, vision_config

            base = TinyBaseConfig(
                image_size=sizes.image_size,
                patch_size=sizes.vit_patch,
                vision_hidden=sizes.vit_hidden,
                vision_layers=sizes.vit_layers,
                vision_heads=sizes.vit_heads,
                vision_intermediate=sizes.vit_intermediate,
            )
            self.vit = CLIPVisionModel(vision_config(base))
            self.image_proj = nn.Linear(sizes.vit_hidden, sizes.embed_dim)
        else:
            blocks: list[nn.Module] = []
            c_in = 3
            for c in sizes.channels:  # each block halves the side: 64 → 4 after four
                blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.GELU(), nn.MaxPool2d(2)]
                c_in = c
            self.image_tower = nn.Sequential(*blocks, nn.Flatten())
            side = sizes.image_size // 2 ** len(sizes.channels)
            self.image_proj = nn.Linear(c_in * side * side, sizes.embed_dim)
        self.tokens = nn.Embedding(sizes.vocab_size, sizes.text_hidden, padding_idx=pad_id)
        self.positions = nn.Embedding(sizes.max_positions, sizes.text_hidden)
        layer = nn.TransformerEncoderLayer(
            sizes.text_hidden,
            sizes.text_heads,
            4 * sizes.text_hidden,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.text_tower = nn.TransformerEncoder(layer, sizes.text_layers, enable_nested_tensor=False)
        self.text_norm = nn.LayerNorm(sizes.text_hidden)
        self.text_proj = nn.Linear(sizes.text_hidden, sizes.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @property
    def config(self) -> Any:  # ClipStyleEncoder reads config.projection_dim
        return type("Sizes", (), {"projection_dim": self.sizes.embed_dim})()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.sizes.image_tower == "vit":
            return self.image_proj(self.vit(pixel_values=pixel_values).pooler_output)
        return self.image_proj(self.image_tower(pixel_values))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, chunks: int = 1
    ) -> torch.Tensor:
        """Masked mean of the text tower. chunks > 1: the rows sorted by length and run in that many groups, each
        cut to its own longest row, so little compute goes to padding (captions of 80–200 words pad a random batch
        by ~25 %); the same vectors up to float rounding (tests/test_recipe_speed.py)."""
        return length_sorted(self._text, input_ids, attention_mask, chunks)

    def _text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = self.sizes.max_positions
        input_ids, attention_mask = input_ids[:, :n], attention_mask[:, :n]
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.tokens(input_ids) + self.positions(pos)[None]
        h = self.text_tower(h, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.text_proj(self.text_norm((h * m).sum(1) / m.sum(1).clamp(min=1)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(self.logit_scale_max)).exp()


def build_dual_encoder(cfg: DualEncoderConfig, tokenizer: Any) -> DualEncoder:
    sizes = DualEncoderSizes(**{**asdict(cfg.sizes), "vocab_size": len(tokenizer)})
    torch.manual_seed(cfg.seed)
    return DualEncoder(
        sizes,
        pad_id=tokenizer.pad_token_id,
        logit_scale_init=cfg.logit_scale_init,
        logit_scale_max=cfg.logit_scale_max,
    )


def image_processor_for(image_size: int) -> Any:
    """The recipe's CLIPImageProcessor at `image_size` (what a LLaVA processor of that size does to an image)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


def training_pairs(data: str, *, min_caption_words: int, batch_size: int) -> list[CaptionExample]:
    """The image–caption pairs of `data` with at least `min_caption_words` words (at least one batch of
    `batch_size`): this dual encoder's, the language model's pre-alignment's and the pretraining's alignment term's
    (tiny/align_text.py)."""
    pairs = [
        e
        for e in read_llava_pretrain(data)
        if e.image is not None and len(e.caption.split()) >= min_caption_words
    ]
    if len(pairs) < batch_size:
        raise ConfigError(
            f"{data}: {len(pairs)} image–caption pairs with ≥ {min_caption_words} words, fewer than one "
            f"batch ({batch_size})"
        )
    return pairs


def make_step_fn(
    model: DualEncoder,
    tokenizer: Any,
    pixels: PixelCache,
    examples: list[CaptionExample],
    cfg: DualEncoderConfig,
) -> StepFn:
    from uniretrieve.tiny.clip_baseline import _pad_rows, _token_row, clip_loss, computed_tokens

    limit = cfg.max_text_tokens or model.sizes.max_positions
    rows: dict[int, list[int]] = {}

    def step(step: int, batch_ids: list[int]) -> dict[str, torch.Tensor | float]:
        for i in batch_ids:
            if i not in rows:
                rows[i] = _token_row(tokenizer, examples[i].caption, limit)
        text = _pad_rows([rows[i] for i in batch_ids], tokenizer.pad_token_id)
        px = pixels([examples[i].image for i in batch_ids])
        with autocast(cfg.precision == "bf16-autocast"):
            t = model.get_text_features(**text, chunks=cfg.text_chunks)
            v = model.get_image_features(px)
        scale = model.scale()
        loss = clip_loss(t, v, scale.log())
        loss.backward()
        mask = text["attention_mask"]
        return {
            "loss": loss.detach(),
            "logit_scale": scale.detach(),
            "tokens": float(mask.sum()),
            "padded_tokens": computed_tokens(mask, cfg.text_chunks),  # what the chunked forward computes
        }

    return step


def save_dual_encoder(model: DualEncoder, tokenizer: Any, cfg: DualEncoderConfig, out: Path) -> Path:
    from safetensors.torch import save_file

    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
        meta = {
            "arch": "dual_encoder",
            "max_text_tokens": cfg.max_text_tokens,
            "image_size": model.sizes.image_size,
            "sizes": asdict(model.sizes),
            "logit_scale_max": cfg.logit_scale_max,
        }
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))
    return out


def load_dual_encoder(path: Path) -> tuple[DualEncoder, Any, dict[str, Any]]:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    meta = json.loads((path / META_FILE).read_text())
    tok = AutoTokenizer.from_pretrained(path)
    sizes = DualEncoderSizes(**{**meta["sizes"], "channels": tuple(meta["sizes"]["channels"])})
    model = DualEncoder(
        sizes, pad_id=tok.pad_token_id, logit_scale_init=1.0, logit_scale_max=meta["logit_scale_max"]
    )
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval(), tok, meta


def train_dual_encoder(
    cfg: DualEncoderConfig, *, console: Any | None = None, wrap: Any = None
) -> tuple[Path, DualEncoder]:
    """Train (or resume) through the training loop; save to `output_dir/final`.

    wrap: `(step_fn, model) → step_fn` around the training step (the gate benchmark evaluates at intervals)."""
    from rich.console import Console
    from transformers import AutoTokenizer

    console = console or Console()
    find_resume(cfg)
    seed_everything(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
    model = build_dual_encoder(cfg, tokenizer)
    examples = training_pairs(cfg.data, min_caption_words=cfg.min_caption_words, batch_size=cfg.batch_size)
    pixels = PixelCache(image_processor_for(cfg.sizes.image_size))
    plan = ShuffledEpochs(len(examples), cfg.batch_size, seed=cfg.seed)
    step_fn = make_step_fn(model, tokenizer, pixels, examples, cfg)
    if wrap is not None:
        step_fn = wrap(step_fn, model)
    run_steps(cfg, FullModel(model), plan, step_fn, total=cfg.max_steps, console=console)
    final = save_dual_encoder(model.eval(), tokenizer, cfg, Path(cfg.output_dir) / "final")
    return final, model
