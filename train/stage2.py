"""Stage 2 — hard-negative enhanced instruction tuning (UniME paper §3.3; docs/method.md#stage-2).

Data flow:  stage2_data (MMEB-train pairs, caps/weights) → student (MLLM + LoRA; prompts as at inference) →
losses.hard_negative_infonce on the global batch (false negatives filtered by β, top-k hard negatives, InfoNCE at
τ) → gradcache (full-batch loss, chunked forwards) → loop (AdamW, schedule, checkpoints, logging).

A side (queries or targets) mixes items with and without an image (a text→image query next to an image→text one),
and a model batch must be homogeneous, so each side is prepared as up to two groups (with / without image), each
tokenized once for the whole local batch; GradCache embeds the groups chunk by chunk and the loss puts the rows back
in batch order (`index_copy`, differentiable) before gathering across ranks with gradients kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from uniretrieve.models.batching import length_buckets
from uniretrieve.train import distributed
from uniretrieve.train.batching import GroupedEpochs, ShuffledEpochs, local_slice
from uniretrieve.train.config import ConfigError, LoraConfig, OptimConfig, TrainConfig
from uniretrieve.train.gradcache import gradcache_step
from uniretrieve.train.loop import StageResult
from uniretrieve.train.losses import hard_negative_infonce
from uniretrieve.train.stage2_data import Stage2Data, Stage2DataConfig, load_stage2_data


@dataclass(kw_only=True)
class HardNegConfig:
    """Options of `hard_negative_infonce` (paper §4.1, docs/method.md#stage-2-loss: k = 8, β = 0.1; τ = 0.02
    is the official code's default)."""

    k: int = 8
    beta: float = 0.1
    temperature: float = 0.02
    fill: Literal["repeat", "mask"] = "repeat"
    """Fewer than k survivors: "repeat" cycles them (paper §3.3.2), "mask" drops the empty slots."""
    in_batch: bool = False
    """Plain InfoNCE over every in-batch candidate (no filtering, no top-k): the ablation's baseline."""
    in_batch_warmup_steps: int = 0
    """The first N optimizer steps use the plain in-batch loss, then the hard negatives. Measured on unime-tiny,
    whose base has no cross-modal alignment yet: top-k hard negatives from step 0 collapse every embedding to one
    point (all similarities → 0.999, loss → ln(k+1)) at τ 0.02 and 0.05 alike, while in-batch InfoNCE separates
    positives from negatives; hardest-negative selection early in training is known to collapse models (Schroff
    et al., 2015, FaceNet §3.2). The paper starts from a 7B MLLM whose embeddings already discriminate: 0 there."""
    symmetric: bool = False
    """Also the target→query direction."""
    mask_same_target: bool = True
    """Never use as a negative a candidate whose target is the same content (text and image path) as the positive
    — classification labels and VQA answers repeat within a batch, and the β filter cannot catch an exact duplicate
    (its similarity equals the positive's). Off = the paper's β filter alone."""

    def __post_init__(self) -> None:
        if self.k < 1 or not self.temperature > 0 or self.beta < 0 or self.in_batch_warmup_steps < 0:
            raise ConfigError(
                "loss.k must be >= 1, loss.temperature > 0, loss.beta >= 0 and loss.in_batch_warmup_steps >= 0"
            )

    def at_step(self, step: int) -> HardNegConfig:
        """The loss used at (0-based) optimizer step `step`: in-batch during the warm-up."""
        return replace(self, in_batch=True) if step < self.in_batch_warmup_steps else self


def _stage2_optim() -> OptimConfig:
    # Paper Table 6 (docs/method.md#stage-2-settings): lr 2e-5 for stage 2 (LLaVA-1.6); warmup unstated
    # (UNCONFIRMED), 0 here.
    return OptimConfig(lr=2e-5)


def _stage2_lora() -> LoraConfig:
    # Paper §4.1: LoRA rank 16 in stage 2.
    return LoraConfig(r=16, alpha=32, dropout=0.05)


@dataclass(kw_only=True)
class Stage2Config(TrainConfig):
    """A stage-2 run: the shared training settings plus the data and loss sections."""

    data: Stage2DataConfig
    loss: HardNegConfig = field(default_factory=HardNegConfig)
    optim: OptimConfig = field(default_factory=_stage2_optim)
    lora: LoraConfig = field(default_factory=_stage2_lora)


Group = tuple[str, torch.Tensor, Mapping[str, torch.Tensor]]
"""(side "q"/"t", row indices in the local batch, prepared inputs)."""


def prepare_groups(
    student: Any, data: Stage2Data, batch: list[int], regime: str, fill: float = 0.0
) -> tuple[list[Group], int]:
    """The local batch's pairs → model inputs: per (side, has-image), groups of rows of similar token count
    (`length_buckets` at `fill`; 0: one group)."""
    pairs = [data.pairs[data.pool[i]] for i in batch]
    sides = {
        "q": [data.item(p.query, p.query_image, regime) for p in pairs],
        "t": [data.item(p.target, p.target_image, regime) for p in pairs],
        "n": [data.item(p.negative, p.negative_image, regime) if p.has_negative else None for p in pairs],
    }
    groups: list[Group] = []
    for side, items in sides.items():
        for has_image in (True, False):
            rows = [i for i, it in enumerate(items) if it is not None and (it.image is not None) == has_image]
            if not rows:
                continue
            inputs = student.prepare([items[i] for i in rows]).inputs
            buckets = length_buckets(inputs["attention_mask"].sum(1).tolist(), min_fill=fill)
            if len(buckets) == 1:
                groups.append((side, torch.tensor(rows), inputs))
                continue
            for bucket in buckets:
                sub = [rows[j] for j in bucket]
                groups.append((side, torch.tensor(sub), student.prepare([items[i] for i in sub]).inputs))
    return groups, len(pairs)


def same_target_matrix(data: Stage2Data, global_batch: list[int]) -> torch.Tensor:
    """[n, n] bool over the global batch: targets i and j are the same text and image."""
    keys = [(p.target.strip(), p.target_image) for p in (data.pairs[data.pool[i]] for i in global_batch)]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    code = torch.tensor([ids[k] for k in keys])
    return code[:, None] == code[None, :]


def hn_loss_fn(
    groups: list[Group],
    n: int,
    loss: HardNegConfig,
    same: torch.Tensor | None = None,
    negatives: bool = False,
) -> Any:
    """Group representations (in `groups` order) → the loss dict over the gathered global batch.

    negatives: the data's labelled negatives are on (Stage2DataConfig.negatives): every rank gathers them, with or
    without a row that has one, so the ranks' collectives match."""

    labelled = [rows for s, rows, _ in groups if s == "n"]

    def loss_fn(*reps: torch.Tensor) -> Mapping[str, torch.Tensor]:
        d = reps[0].shape[1]
        side = {s: reps[0].new_zeros((n, d)) for s in ("q", "t", "n")}
        for (s, rows, _), r in zip(groups, reps, strict=True):
            side[s] = side[s].index_copy(0, rows.to(r.device), r)
        negative = mask = None
        # Rows with the data's own negative (Stage2DataConfig.negatives); a row without one stays 0, masked.
        if negatives or labelled:
            has = reps[0].new_zeros(n)
            if labelled:
                has[torch.cat(labelled).to(has.device)] = 1.0
            negative = distributed.gather_with_grad(side["n"])
            mask = distributed.gather_with_grad(has) > 0.5
        out = hard_negative_infonce(
            distributed.gather_with_grad(side["q"]),
            distributed.gather_with_grad(side["t"]),
            k=loss.k,
            beta=loss.beta,
            temperature=loss.temperature,
            fill=loss.fill,
            symmetric=loss.symmetric,
            in_batch=loss.in_batch,
            same_target=same,
            negative=negative,
            negative_mask=mask,
        )
        return {**out, "in_batch": torch.tensor(float(loss.in_batch))}  # logged: which loss this step used

    return loss_fn


def make_step_fn(student: Any, data: Stage2Data, cfg: Stage2Config) -> Any:
    def step(step: int, global_batch: list[int]) -> dict[str, torch.Tensor]:
        groups, n = prepare_groups(
            student, data, local_slice(global_batch), cfg.prompt_regime, cfg.bucket_fill
        )
        same = same_target_matrix(data, global_batch) if cfg.loss.mask_same_target else None
        return gradcache_step(
            [student.embed] * len(groups),
            [g[2] for g in groups],
            hn_loss_fn(groups, n, cfg.loss.at_step(step), same, negatives=cfg.data.negatives),
            chunk_size=cfg.chunk_size,
            loss_scale=distributed.ddp_loss_scale(),
        )

    return step


@dataclass
class Stage2Result(StageResult):
    """Stage 2 reports nothing beyond the loop's paths and metrics."""


def run_stage2(cfg: Stage2Config, *, console: Any | None = None, wrap: Any = None) -> Stage2Result:
    """Run (or resume) stage 2 end to end: data, student, loop, adapter (and merged model).

    wrap: `(step_fn, student) → step_fn` around the training step (benchmarks/stage2_curve.py evaluates at
    intervals)."""
    from rich.console import Console

    from uniretrieve.models.device import resolve_device
    from uniretrieve.train.loop import find_resume, seed_everything, train_loop
    from uniretrieve.train.student import student_for

    console = console or Console(stderr=True)
    distributed.init_distributed()
    device = resolve_device(cfg.device)
    find_resume(cfg)
    data = load_stage2_data(cfg.data, seed=cfg.seed)
    if distributed.is_main():
        mix = ", ".join(f"{s} {c}" for s, c in data.counts.items())
        console.print(f"data: {len(data.pool)} pairs per epoch from {cfg.data.root} ({mix})")
    seed_everything(cfg.seed)
    subset_ids = {name: i for i, name in enumerate(data.counts)}
    student = student_for(cfg, device)
    plan = (
        GroupedEpochs([subset_ids[data.pairs[i].subset] for i in data.pool], cfg.batch_size, seed=cfg.seed)
        if cfg.data.batch_by_subset
        else ShuffledEpochs(len(data.pool), cfg.batch_size, seed=cfg.seed)
    )
    step_fn = make_step_fn(student, data, cfg)
    if wrap is not None:
        step_fn = wrap(step_fn, student)
    result = train_loop(cfg, student, plan, step_fn, console=console)
    return Stage2Result.from_loop(result)
