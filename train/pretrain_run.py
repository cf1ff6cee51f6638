"""The generative pretraining run of the tiny base: config, full-parameter loop, exact resume, final checkpoint.

Layout of `output_dir`:
    config.yaml            the resolved PretrainConfig
    processor/             the tokenizer (trained once on the captions) and processor, reused on resume
    metrics.jsonl          one row per logged step
    checkpoints/step-N/    model.safetensors (float32), optimizer.pt, scheduler.pt, rng.pt, trainer_state.json
    final/                 the pretrained base (float16 safetensors + processor): `Encoder.from_pretrained` loads it

The data order is `ShuffledEpochs(seed)`, a function of the step, so a resumed run sees exactly the batches the
uninterrupted one would have.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uniretrieve.io import atomic_dir, atomic_write_text
from uniretrieve.models.backbones import REGISTRY
from uniretrieve.models.images import load_image
from uniretrieve.train.batching import ShuffledEpochs
from uniretrieve.train.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    torch_save_atomic,
)
from uniretrieve.train.config import ConfigError, OptimConfig, save_config
from uniretrieve.train.loop import apply_gradients, build_optimizer, build_scheduler, seed_everything
from uniretrieve.train.pretrain import caption_batch, caption_loss, caption_prompt
from uniretrieve.train.pretrain_data import CaptionExample, read_llava_pretrain
from uniretrieve.train.tiny_base import TinyBaseConfig, build_base, save_checkpoint, train_tokenizer


@dataclass(kw_only=True)
class PretrainConfig:
    data: str
    """A LLaVA-Pretrain json or its folder (`uniretrieve scenes generate` writes `llava-pretrain/`)."""
    output_dir: str
    batch_size: int = 32
    max_steps: int = 1000
    max_caption_tokens: int = 256
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_last: int = 1
    vision_init: str | None = None
    """A trained CLIP-style dual encoder (train/clip_baseline.py, same vision sizes) whose vision tower initialises
    the ViT: contrastive pre-alignment, so the captioner starts from image-dependent features."""
    max_caption_words: int | None = None
    """Train only on captions of at most this many words, like LLaVA's feature-alignment stage (short BLIP
    captions). Measured on the generated scenes (benchmarks/image_dependence.py): with the long captions' template
    sentences dominating the loss, the captioner learned the text prior and ignored its image (loss with a shuffled
    image equal to the loss with the right one); on short captions alone it learns to read the image."""
    freeze_vision: bool = True
    """Keep the ViT (from `vision_init`, else random) fixed and train the projector and the language model, as LLaVA
    freezes its pretrained CLIP encoder. Measured (benchmarks/RESULTS.md): only a contrastively pre-aligned frozen ViT
    made the captioner read its images; trained jointly from scratch or frozen at random initialisation, the caption
    loss with a shuffled image stayed equal to the loss with the right one."""
    base: TinyBaseConfig = field(default_factory=TinyBaseConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, warmup_steps=50, max_grad_norm=1.0)
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1:
            raise ConfigError("batch_size and max_steps must be >= 1")
        if self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be >= 0")
        if self.max_caption_words is not None and self.max_caption_words < 1:
            raise ConfigError("max_caption_words must be >= 1 (or null for every caption)")


class LengthGroupedEpochs(ShuffledEpochs):
    """ShuffledEpochs whose batches hold examples of similar length (short with short, long with long).

    Each epoch's random order is cut into windows of `group` batches, each window sorted by length and split into
    batches, and the batch order shuffled again: far less padding (captions run from 8 to 250 tokens) while every
    example is still seen once per epoch, in an order that is a pure function of (seed, epoch).
    """

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int, group: int = 16) -> None:
        super().__init__(len(lengths), batch_size, seed=seed)
        self.lengths = torch.tensor(lengths)
        self.group = group

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_examples, generator=g)[: self.steps_per_epoch * self.batch_size]
            window = self.batch_size * self.group
            parts = [w[torch.argsort(self.lengths[w], stable=True)] for w in order.split(window)]
            batches = torch.cat(parts).view(self.steps_per_epoch, self.batch_size)
            g.manual_seed(self.seed * 1_000_003 + epoch + 7)
            self._cache = (epoch, batches[torch.randperm(self.steps_per_epoch, generator=g)].reshape(-1))
        return self._cache[1]


def make_processor(data: str | Path, out: Path, base: TinyBaseConfig | None = None) -> Any:
    """`out/processor`: the tokenizer trained on every caption of `data` (short and long) and the LLaVA processor;
    made once and reused (the CLIP-style pre-alignment and the pretraining share it)."""
    from transformers import AutoProcessor

    pdir = out / "processor"
    if (pdir / "processor_config.json").exists():
        return AutoProcessor.from_pretrained(pdir)
    base = base or TinyBaseConfig()
    tok = train_tokenizer([e.caption for e in read_llava_pretrain(data)], base)
    _, proc = build_base(base, tok)
    with atomic_dir(pdir) as tmp:
        proc.save_pretrained(tmp)
    return AutoProcessor.from_pretrained(pdir)


def training_examples(cfg: PretrainConfig) -> list[CaptionExample]:
    """The data's image–caption pairs, restricted to captions of at most `max_caption_words` words when set."""
    examples = read_llava_pretrain(cfg.data)
    if cfg.max_caption_words is None:
        return examples
    kept = [e for e in examples if len(e.caption.split()) <= cfg.max_caption_words]
    if not kept:
        raise ConfigError(
            f"{cfg.data}: no caption has at most {cfg.max_caption_words} words (max_caption_words)"
        )
    return kept


def pretrain(cfg: PretrainConfig, *, console: Any | None = None) -> Path:
    """Run (or resume) the pretraining; returns the `final/` checkpoint directory."""
    from rich.console import Console

    console = console or Console()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    seed_everything(cfg.seed)
    processor = make_processor(cfg.data, out, cfg.base)
    examples = training_examples(cfg)
    model, _ = build_base(cfg.base, processor.tokenizer)
    wrapper = REGISTRY["llava"].wrapper_for("mistral", frozenset())

    if cfg.vision_init is not None and ckpt_missing(out):
        load_vision_tower(model, Path(cfg.vision_init))
    if cfg.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.max_steps)
    plan = LengthGroupedEpochs([len(e.caption) for e in examples], cfg.batch_size, seed=cfg.seed)
    start = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
        model.tie_weights()
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
        set_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
        start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
        console.print(f"[bold]resuming[/] from {ckpt} at step {start}")
    metrics = out / "metrics.jsonl"
    _truncate(metrics, start)

    model.train()
    t0 = time.perf_counter()
    for step in range(start, cfg.max_steps):
        batch_ids = plan.global_batch(step)
        ex = [examples[i] for i in batch_ids]
        batch = caption_batch(
            processor,
            [caption_prompt(wrapper.template, "<image>" if e.image else None, e.request) for e in ex],
            [load_image(e.image) if e.image else None for e in ex],
            [e.caption for e in ex],
            max_length=cfg.max_caption_tokens,
        )
        loss = caption_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        apply_gradients(model.parameters(), optimizer, scheduler, cfg.optim.max_grad_norm)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            row = {
                "step": done,
                "loss": round(float(loss.detach()), 5),
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - t0, 2),
                **plan.position(step),
            }
            with metrics.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            console.print(f"pretrain step {done}/{cfg.max_steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}")
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.max_steps:
            _save_step(out, done, model, optimizer, scheduler)
            prune_checkpoints(out, cfg.keep_last)
    final = out / "final"
    with atomic_dir(final) as tmp:
        save_checkpoint(model.eval(), processor, tmp)
        atomic_write_text(
            tmp / "pretrain.json", json.dumps({"steps": cfg.max_steps, "data": cfg.data}, indent=2)
        )
    return final


def ckpt_missing(out: Path) -> bool:
    return latest_checkpoint(out) is None


def load_vision_tower(model: Any, clip_dir: Path) -> None:
    """Copy a CLIPModel's vision transformer into the LLaVA's vision tower (same CLIPVisionConfig sizes)."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32)
    state = clip.vision_model.state_dict()
    tower = model.model.vision_tower
    target = tower.vision_model if hasattr(tower, "vision_model") else tower
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "post_layernorm" not in k]:
        raise ValueError(
            f"{clip_dir}: vision weights do not fit the ViT (missing {missing}, unexpected {unexpected})"
        )


def _save_step(out: Path, step: int, model: Any, optimizer: Any, scheduler: Any) -> None:
    from safetensors.torch import save_file

    final = checkpoint_dir(out, step)
    with atomic_dir(final) as tmp:
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
        save_file(state, tmp / "model.safetensors")
        torch_save_atomic(optimizer.state_dict(), tmp / "optimizer.pt")
        torch_save_atomic(scheduler.state_dict(), tmp / "scheduler.pt")
        torch_save_atomic(rng_state(), tmp / "rng.pt")
        atomic_write_text(tmp / "trainer_state.json", json.dumps({"step": step}))


def _truncate(metrics: Path, step: int) -> None:
    """Drop metric rows past `step` (written after the checkpoint a resumed run restarts from)."""
    if not metrics.exists():
        return
    rows = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    atomic_write_text(metrics, "".join(r + "\n" for r in rows))
