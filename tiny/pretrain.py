"""The generative pretraining run of the tiny base: config, the caption objective's step function, final export.

The run goes through the one training loop (train/loop.py: exact resume, config check on resume, metrics,
checkpoints of the whole model). Layout of `output_dir`:
    config.yaml            the resolved PretrainConfig
    processor/             the tokenizer (trained once on the captions) and processor, reused on resume
    metrics.jsonl          one row per step
    checkpoints/step-N/    model/model.safetensors (float32), optimizer, schedule, RNG, config, trainer_state.json
    final/                 the pretrained base (float16 safetensors + processor): `Encoder.from_pretrained` loads it

The data order is `LengthGroupedEpochs(seed)`, a function of the step, so a resumed run sees exactly the batches
the uninterrupted one would have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from uniretrieve.io import atomic_dir, atomic_write_text
from uniretrieve.models.backbones import REGISTRY
from uniretrieve.scenes.layouts import SUMMARY_IMAGE_REQUEST
from uniretrieve.tiny.base import TinyBaseConfig, build_base, save_llava, train_tokenizer
from uniretrieve.tiny.captions import CaptionBatcher, caption_loss, caption_prompt
from uniretrieve.tiny.config import PretrainConfig
from uniretrieve.tiny.cpu import autocast
from uniretrieve.tiny.pretrain_data import CaptionExample, read_llava_pretrain
from uniretrieve.train.batching import ShuffledEpochs
from uniretrieve.train.config import ConfigError
from uniretrieve.train.loop import StepFn, find_resume, run_steps, seed_everything
from uniretrieve.train.trainable import FullModel

SUMMARY_REQUEST = SUMMARY_IMAGE_REQUEST.removeprefix("<image>\n")
"""The E5-V image request (the embedding prompt's body), for the rows generated through the embedding position."""


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


def make_step_fn(
    model: Any,
    processor: Any,
    examples: list[CaptionExample],
    cfg: PretrainConfig,
    align: tuple[Any, ShuffledEpochs] | None = None,
) -> StepFn:
    """The loop's step function: a batch of image–caption pairs → gradients of the caption loss (one process);
    the forward under bf16 autocast when `cfg.precision` says so (float32 weights). `align`: the caption-alignment
    term (tiny/align_text.py CaptionAlignTerm) and its own batch plan over the long pairs, a function of the step
    as the caption batches are, so a resumed run sees the same pairs."""
    template = REGISTRY["llava"].wrapper_for("mistral", frozenset()).template
    batcher = CaptionBatcher(processor, max_length=cfg.max_caption_tokens)

    def through_embedding(e: CaptionExample) -> bool:
        n = cfg.bottleneck_min_words
        return n is not None and e.image is not None and len(e.caption.split()) >= n

    def step(step: int, batch_ids: list[int]) -> dict[str, torch.Tensor | float]:
        ex = [examples[i] for i in batch_ids]
        gist = [through_embedding(e) for e in ex]
        batch = batcher(
            [
                caption_prompt(template, "<image>" if e.image else None, SUMMARY_REQUEST if g else e.request)
                for e, g in zip(ex, gist, strict=True)
            ],
            [e.image for e in ex],
            [e.caption for e in ex],
            gist,
        )
        mask = batch.pop("token_mask", batch["attention_mask"])
        with autocast(cfg.precision == "bf16-autocast"):
            loss = caption_loss(model, batch)
        out: dict[str, torch.Tensor | float] = {"loss": loss.detach()}
        if align is not None:
            term, plan = align
            a_loss, info = term(plan.global_batch(step))
            loss = loss + cfg.caption_align_weight * a_loss
            out.update(align_loss=a_loss.detach(), **info)
        loss.backward()
        return {**out, "tokens": float(mask.sum()), "padded_tokens": float(mask.numel())}

    return step


def _check_start_models(cfg: PretrainConfig) -> None:
    """`init` must be a saved LLaVA (config.json), `vision_init` a trained dual encoder or CLIPModel folder: one line
    naming the path otherwise, before anything is built."""
    from uniretrieve.tiny.dual_encoder import META_FILE

    if cfg.init is not None and not (Path(cfg.init) / "config.json").is_file():
        raise ConfigError(f"--init {cfg.init}: no config.json there; pass a pretraining run's final/ folder")
    if cfg.caption_align is not None and not (Path(cfg.caption_align) / META_FILE).is_file():
        raise ConfigError(
            f"caption_align {cfg.caption_align}: no {META_FILE} there; pass a pre-alignment run's final/ folder"
        )
    if cfg.vision_init is not None and not any(
        (Path(cfg.vision_init) / f).is_file() for f in (META_FILE, "config.json")
    ):
        raise ConfigError(
            f"--vision-init {cfg.vision_init}: neither {META_FILE} nor config.json there; pass a "
            "pre-alignment run's final/ folder (e.g. runs/unime-tiny/align/final)"
        )


def pretrain(cfg: PretrainConfig, *, console: Any | None = None) -> Path:
    """Run (or resume) the pretraining; returns the `final/` checkpoint directory."""
    from rich.console import Console

    console = console or Console()
    _check_start_models(cfg)
    resume = find_resume(cfg)  # a refused resume fails before the tokenizer or the model is built
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    examples = training_examples(cfg)
    enc = None
    if cfg.caption_align is not None:  # the Encoder's embedding path over the very model that trains
        from transformers import AutoProcessor

        from uniretrieve.tiny.align_text import text_encoder

        enc = text_encoder(str(cfg.init), precision=cfg.precision)
        model, processor = enc.model, AutoProcessor.from_pretrained(cfg.init)
        model.requires_grad_(True)
    elif cfg.init is not None:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        processor = AutoProcessor.from_pretrained(cfg.init)
        model = LlavaForConditionalGeneration.from_pretrained(cfg.init, dtype=torch.float32)
    else:
        # the saved tokenizer, with the processor of this run's base (its image-token count follows the base)
        model, processor = build_base(cfg.base, make_processor(cfg.data, out, cfg.base).tokenizer)
        if cfg.vision_init is not None and resume is None:  # a checkpoint already holds the copied ViT
            load_vision_tower(model, Path(cfg.vision_init))
    if cfg.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    plan = LengthGroupedEpochs([len(e.caption) for e in examples], cfg.batch_size, seed=cfg.seed)
    trainable, align, aligner = model, None, None
    if enc is not None:
        from uniretrieve.tiny.align_text import CaptionAlignTerm, TextAlignConfig, make_aligner
        from uniretrieve.tiny.dual_encoder import training_pairs

        aligner = make_aligner(enc, Path(cfg.caption_align), 100.0, start=Path(cfg.init))
        words = TextAlignConfig.min_caption_words  # the pre-alignment's pairs
        pairs = training_pairs(cfg.data, min_caption_words=words, batch_size=cfg.caption_align_batch_size)
        term = CaptionAlignTerm(enc, aligner, pairs, Path(cfg.caption_align))
        align = (term, ShuffledEpochs(len(pairs), cfg.caption_align_batch_size, seed=cfg.seed + 1))
        trainable = aligner
    step_fn = make_step_fn(model, processor, examples, cfg, align)
    run_steps(cfg, FullModel(trainable), plan, step_fn, total=cfg.max_steps, console=console)
    final = out / "final"
    with atomic_dir(final) as tmp:
        save_llava(model.eval(), processor, tmp)
        if aligner is not None:
            from uniretrieve.tiny.align_text import save_head

            save_head(aligner, tmp)
        atomic_write_text(
            tmp / "pretrain.json", json.dumps({"steps": cfg.max_steps, "data": cfg.data}, indent=2)
        )
    return final


def load_vision_tower(model: Any, clip_dir: Path) -> None:
    """Copy a dual encoder's vision transformer into the LLaVA's vision tower (same CLIPVisionConfig sizes): a
    CLIPModel (the recipe's pre-alignment) or the gate's dual encoder with its ViT tower (tiny/dual_encoder.py)."""
    from transformers import CLIPModel

    from uniretrieve.tiny.dual_encoder import META_FILE, load_dual_encoder

    meta = clip_dir / META_FILE
    if meta.is_file() and json.loads(meta.read_text()).get("arch") == "dual_encoder":
        dual, _, info = load_dual_encoder(clip_dir)
        if info["sizes"]["image_tower"] != "vit":
            raise ValueError(
                f"{clip_dir}: a {info['sizes']['image_tower']} image tower cannot be a LLaVA's ViT"
            )
        state = _vit_body(dual.vit).state_dict()
    else:
        state = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).vision_model.state_dict()
    target = _vit_body(model.model.vision_tower)
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "post_layernorm" not in k]:
        raise ValueError(
            f"{clip_dir}: vision weights do not fit the ViT (missing {missing}, unexpected {unexpected})"
        )


def _vit_body(tower: Any) -> Any:
    """The CLIP vision transformer inside a CLIPVisionModel wrapper (transformers versions differ) or itself."""
    return tower.vision_model if hasattr(tower, "vision_model") else tower
