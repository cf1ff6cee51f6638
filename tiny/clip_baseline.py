"""CLIP-style dual encoders: the recipe's ViT pre-alignment (a transformers `CLIPModel` with the tiny base's
vision-tower sizes, so its ViT can become the MLLM's), and `ClipStyleEncoder`, the `uniretrieve.Encoder` interface over
any trained dual encoder, so the same evaluation code scores it.

The ablation's CLIP-style row is the learnability gate's encoder (tiny/dual_encoder.py) with CLIP's 77-token text
limit counted in the recipe tokenizer's tokens: the paper's foil (docs/benchmarks.md#published-numbers), a dual encoder
whose text tower cannot read past 77 tokens, so long captions lose their tail. Both share the recipe's tokenizer, so
the comparison is about architecture, not tokenization.

An item with both text and image (instruction tasks) is embedded as the normalised sum of its image and text
embeddings (a simple late fusion, our choice); an instruction is prepended to the text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from uniretrieve.io import atomic_dir, atomic_write_text
from uniretrieve.models.backbones import MMEB_IMAGE_PLACEHOLDER
from uniretrieve.models.images import load_image
from uniretrieve.tiny.base import TinyBaseConfig, vision_config
from uniretrieve.tiny.cpu import autocast
from uniretrieve.tiny.pixels import PixelCache
from uniretrieve.tiny.pretrain_data import CaptionExample, read_llava_pretrain
from uniretrieve.train.batching import ShuffledEpochs
from uniretrieve.train.config import ConfigError, OptimConfig, StepCheckpointConfig
from uniretrieve.train.loop import StepFn, find_resume, run_steps, seed_everything
from uniretrieve.train.trainable import FullModel
from uniretrieve.types import Item

CLIP_TEXT_TOKENS = 77
"""CLIP's context length (Radford et al., 2021), the limit Long-CLIP and the UniME paper point at."""


@dataclass(kw_only=True)
class ClipBaselineConfig:
    data: str
    """LLaVA-Pretrain json or folder: the same image–caption pairs the tiny MLLM is pretrained on."""
    tokenizer: str
    """A directory with the tiny base's tokenizer (e.g. the pretraining run's `processor/`)."""
    output_dir: str
    batch_size: int = 64
    max_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    text_layers: int = 4
    text_hidden: int = 256
    projection_dim: int = 256
    max_text_tokens: int = CLIP_TEXT_TOKENS
    precision: Literal["fp32", "bf16-autocast"] = "bf16-autocast"
    """bf16-autocast: bf16 forward, float32 weights and loss (uniretrieve/tiny/cpu.py); fp32 where unsupported."""
    text_chunks: int = 4
    """Length-sorted groups of the text forward (`length_sorted`): captions of 2 to 77 tokens share a batch."""
    base: TinyBaseConfig = field(default_factory=TinyBaseConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.1, warmup_steps=50)
    )
    checkpoint: StepCheckpointConfig = field(
        default_factory=lambda: StepCheckpointConfig(every_steps=100, keep_last=1)
    )

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.max_steps < 1:
            raise ConfigError("batch_size must be >= 2 and max_steps >= 1")


def _token_row(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """`<s> text </s>` cut to `max_tokens` (the `</s>` always kept: CLIP pools at the first eos)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 2]
    return [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]


def _pad_rows(rows: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded to the longest row of the batch (not to the limit: no compute on padding beyond it)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_sorted(
    fn: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunks: int
) -> torch.Tensor:
    """`fn(input_ids, attention_mask)` → [B, D] on the rows sorted by length in `chunks` groups, each cut to its own
    longest row, then put back in order: right-padded rows do not depend on the padding after them (padding masked
    out; CLIP's causal text tower pools at the eos), so this is the one-pass result up to float rounding with far
    less compute on padding when short and long captions share a batch (tests/test_recipe_speed.py)."""
    if chunks <= 1:
        return fn(input_ids, attention_mask)
    lengths = attention_mask.sum(1)
    order = torch.argsort(lengths)
    parts = []
    for idx in order.tensor_split(chunks):
        if len(idx):
            width = int(lengths[idx].max())
            parts.append(fn(input_ids[idx, :width], attention_mask[idx, :width]))
    return torch.cat(parts)[torch.argsort(order)]


def computed_tokens(attention_mask: torch.Tensor, chunks: int) -> float:
    """Token positions `length_sorted` computes (real tokens plus each group's padding)."""
    lengths = attention_mask.sum(1).sort().values
    return float(sum(int(g.max()) * len(g) for g in lengths.tensor_split(max(1, chunks)) if len(g)))


def _tokenize(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
    return _pad_rows([_token_row(tokenizer, t, max_tokens) for t in texts], tokenizer.pad_token_id)


def build_clip(cfg: ClipBaselineConfig, tokenizer: Any) -> Any:
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=max(1, cfg.text_hidden // 64),
        max_position_embeddings=cfg.max_text_tokens,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = vision_config(cfg.base)
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=cfg.projection_dim
    )
    torch.manual_seed(cfg.seed)
    return CLIPModel(config)


def _pooled(out: Any) -> torch.Tensor:
    """CLIPModel.get_*_features returns the projected vectors (a model output holding them in transformers 5)."""
    return getattr(out, "pooler_output", out)


def clip_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIPModel's symmetric InfoNCE, computed in float32 from the (autocast) embeddings."""
    text, image = F.normalize(text.float(), dim=-1), F.normalize(image.float(), dim=-1)
    logits = logit_scale.float().exp() * text @ image.t()
    labels = torch.arange(len(text), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def make_step_fn(
    model: Any, tokenizer: Any, image_processor: Any, examples: list[CaptionExample], cfg: ClipBaselineConfig
) -> StepFn:
    """The loop's step function: a batch of image–caption pairs → gradients of the CLIP loss (one process).

    Captions are tokenized and images decoded and preprocessed once per run (PixelCache); the forward runs under
    bf16 autocast when `cfg.precision` says so, the loss in float32."""
    pixels = PixelCache(image_processor)
    rows: dict[int, list[int]] = {}

    def step(step: int, batch_ids: list[int]) -> dict[str, torch.Tensor]:
        for i in batch_ids:
            if i not in rows:
                rows[i] = _token_row(tokenizer, examples[i].caption, cfg.max_text_tokens)
        text = _pad_rows([rows[i] for i in batch_ids], tokenizer.pad_token_id)
        px = pixels([examples[i].image for i in batch_ids])
        with autocast(cfg.precision == "bf16-autocast"):
            t = length_sorted(_text_features, text["input_ids"], text["attention_mask"], cfg.text_chunks)
            v = _pooled(model.get_image_features(pixel_values=px))
        loss = clip_loss(t, v, model.logit_scale)
        loss.backward()
        n = text["attention_mask"]
        return {
            "loss": loss.detach(),
            "tokens": float(n.sum()),
            "padded_tokens": computed_tokens(n, cfg.text_chunks),
        }

    def _text_features(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=ids, attention_mask=mask))

    return step


def train_clip_baseline(cfg: ClipBaselineConfig, *, console: Any | None = None) -> Path:
    """Train (or resume) the dual encoder through the training loop and save it to `output_dir/final` (model,
    tokenizer, image processor, config)."""
    from rich.console import Console
    from transformers import AutoTokenizer, CLIPImageProcessor

    console = console or Console()
    find_resume(cfg)  # a refused resume fails before anything is built
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.base.image_size},
        crop_size={"height": cfg.base.image_size, "width": cfg.base.image_size},
    )
    model = build_clip(cfg, tokenizer)
    examples = [e for e in read_llava_pretrain(cfg.data) if e.image is not None]  # image–caption pairs only
    plan = ShuffledEpochs(len(examples), cfg.batch_size, seed=cfg.seed)
    step_fn = make_step_fn(model, tokenizer, image_processor, examples, cfg)
    run_steps(cfg, FullModel(model), plan, step_fn, total=cfg.max_steps, console=console)
    final = out / "final"
    with atomic_dir(final) as tmp:
        model.eval().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        atomic_write_text(tmp / "clip_baseline.json", json.dumps({"max_text_tokens": cfg.max_text_tokens}))
    return final


@dataclass
class ClipBatch:
    """Prepared inputs of a batch: tokenized texts and/or pixels, and which rows have which."""

    text: dict[str, torch.Tensor] | None
    pixels: torch.Tensor | None
    text_rows: list[int]
    image_rows: list[int]
    size: int
    truncated: int = 0


class ClipInputBuilder:
    """Items → `ClipBatch` (CPU work only; picklable for DataLoader workers, like `InputBuilder`)."""

    def __init__(self, tokenizer: Any, image_processor: Any, max_text_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_text_tokens = max_text_tokens

    def __call__(self, items: Sequence[Item]) -> ClipBatch:
        t_rows = [i for i, it in enumerate(items) if it.text is not None or it.instruction]
        i_rows = [i for i, it in enumerate(items) if it.image is not None]
        texts = [_clip_text(items[i]) for i in t_rows]
        text = _tokenize(self.tokenizer, texts, self.max_text_tokens) if texts else None
        pixels = None
        if i_rows:
            images = [load_image(items[i].image) for i in i_rows]
            pixels = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return ClipBatch(text, pixels, t_rows, i_rows, len(items))


def _clip_text(item: Item) -> str:
    """Instruction and text as plain words: CLIP has no prompt template, and MMEB's image placeholder is dropped."""
    raw = " ".join(x for x in (item.instruction, item.text) if x)
    return " ".join(raw.replace(MMEB_IMAGE_PLACEHOLDER, " ").split())


class ClipStyleEncoder:
    """The `Encoder` interface (`encode`, `batches`, `input_builder`, `forward`, `describe`) over a trained dual
    encoder, so the evaluation harness scores it unchanged. Prompts do not exist for it: `prompt_regime` may be set
    to whichever regime a benchmark asks for, the texts are embedded as plain words either way."""

    family = "clip_dual_encoder"

    def __init__(
        self, model: Any, tokenizer: Any, image_processor: Any, max_text_tokens: int, source: str
    ) -> None:
        self.model = model.eval()
        self.input_builder = ClipInputBuilder(tokenizer, image_processor, max_text_tokens)
        self.max_text_tokens = max_text_tokens
        self.model_id = source
        self.prompt_regime = "e5v"
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClipStyleEncoder:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        p = Path(path)
        meta = json.loads((p / "clip_baseline.json").read_text())
        if meta.get("arch") == "dual_encoder":  # the gate's encoder (tiny/dual_encoder.py)
            from uniretrieve.tiny.dual_encoder import image_processor_for, load_dual_encoder

            model, tok, meta = load_dual_encoder(p)
            limit = meta["max_text_tokens"] or model.sizes.max_positions
            return cls(model, tok, image_processor_for(meta["image_size"]), limit, str(p))
        return cls(
            CLIPModel.from_pretrained(p, dtype=torch.float32),
            AutoTokenizer.from_pretrained(p),
            CLIPImageProcessor.from_pretrained(p),
            meta["max_text_tokens"],
            str(p),
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "family": self.family,
            "dim": self.dim,
            "prompt_regime": "none",
            "max_text_tokens": self.max_text_tokens,
            "normalized": True,
        }

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[list[int]]:
        for s in range(0, len(items), batch_size):
            yield list(range(s, min(s + batch_size, len(items))))

    @torch.inference_mode()
    def forward(self, batch: ClipBatch) -> torch.Tensor:
        vec = torch.zeros((batch.size, self.dim))
        if batch.text is not None:
            out = self.model.get_text_features(**batch.text)
            vec[batch.text_rows] += F.normalize(getattr(out, "pooler_output", out), dim=-1)
        if batch.pixels is not None:
            out = self.model.get_image_features(pixel_values=batch.pixels)
            vec[batch.image_rows] += F.normalize(getattr(out, "pooler_output", out), dim=-1)
        return F.normalize(vec, dim=-1)

    def encode(
        self, items: Sequence[Item], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for idx in self.batches(items, batch_size):
            out[idx] = self.forward(self.input_builder([items[i] for i in idx])).numpy()
        return out

    def encode_texts(self, texts: Sequence[str], instruction: str | None = None, **kw: Any) -> np.ndarray:
        return self.encode([Item(text=t, instruction=instruction) for t in texts], **kw)

    def encode_images(self, images: Sequence[Any], instruction: str | None = None, **kw: Any) -> np.ndarray:
        return self.encode([Item(image=im, instruction=instruction) for im in images], **kw)
