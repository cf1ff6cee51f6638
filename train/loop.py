"""The one training loop: a plain `for step` loop around an objective's step function.

Per optimizer step:  zero grads → `step_fn` (forward/backward, gradients *accumulated*, e.g. by GradCache)
→ average gradients over ranks → clip → AdamW step → schedule step → log → maybe checkpoint.

`run_steps` is that loop for any objective: what it trains is a `train.trainable.Trainable` (a student's LoRA
adapter, or a whole model), and resume, the config check on resume, logging (metrics.jsonl) and checkpoints
(train/checkpoint.py) are the same for all. `train_loop` runs a UniME stage (a student) through it and exports the
adapter (and merged model); the tiny recipe's generative pretraining and CLIP-style baseline run through it too.

The data order is a function of the step (train/batching.py), so an exact resume needs only the trained weights,
the optimizer, the schedule and the RNG states at a step boundary (train/checkpoint.py); a resumed run then
reproduces the uninterrupted run's losses step for step (tests/test_train_resume.py, tests/test_pretrain.py).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from uniretrieve.io import atomic_write_text, remove_stale_temps
from uniretrieve.train import distributed
from uniretrieve.train.batching import BatchPlan
from uniretrieve.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_adapter,
    save_checkpoint,
    save_merged,
)
from uniretrieve.train.config import (
    OptimConfig,
    StepCheckpointConfig,
    TrainConfig,
    config_to_dict,
    read_yaml,
    save_config,
)
from uniretrieve.train.trainable import LoraAdapter, Trainable

StepFn = Callable[[int, list[int]], Mapping[str, torch.Tensor | float]]
"""(0-based step, global batch indices) → metrics. Must accumulate gradients into `.grad` (backpropagating
`loss * ddp_loss_scale()`; a single-process objective backpropagates the loss itself) and return detached scalars
including "loss", the unscaled global loss."""

METRICS_FILE = "metrics.jsonl"

# Settings that may change between an interrupted run and its resume without changing the trajectory.
RESUME_MUTABLE = ("output_dir", "log_every", "device", "checkpoint", "trust_remote_code")


class LoopConfig(Protocol):
    """The settings the loop reads (`TrainConfig` and the tiny recipe's run configs have them); the whole config
    is saved beside every checkpoint and compared on resume."""

    output_dir: str
    log_every: int
    optim: OptimConfig
    checkpoint: StepCheckpointConfig


@dataclass
class StepsResult:
    output_dir: Path
    final_step: int
    resumed_from: Path | None
    last_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopResult:
    output_dir: Path
    final_step: int
    adapter_dir: Path
    merged_dir: Path | None
    resumed_from: Path | None
    last_metrics: dict[str, Any] = field(default_factory=dict)


S = TypeVar("S", bound="StageResult")


@dataclass
class StageResult:
    """What a UniME training stage returns: the loop's result with its paths as strings (JSON-able, printed)."""

    output_dir: str
    adapter_dir: str
    merged_dir: str | None
    final_step: int
    last_metrics: dict[str, Any]

    @classmethod
    def from_loop(cls: type[S], result: LoopResult, **extra: Any) -> S:
        """`extra`: the fields a stage's subclass adds."""
        return cls(
            output_dir=str(result.output_dir),
            adapter_dir=str(result.adapter_dir),
            merged_dir=str(result.merged_dir) if result.merged_dir else None,
            final_step=result.final_step,
            last_metrics=result.last_metrics,
            **extra,
        )


def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy; under torchrun every rank gets `seed + rank` (different dropout masks)."""
    s = seed + distributed.rank()
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def total_steps(cfg: TrainConfig, plan: BatchPlan) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    assert cfg.epochs is not None  # TrainConfig guarantees one of them
    return max(1, math.ceil(cfg.epochs * plan.steps_per_epoch))


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr for 0-based optimizer step `step` of `total`.

    Linear warmup over `warmup_steps` (step 0 already gets lr/warmup, never 0), then cosine or linear decay from
    1 to `min_lr_ratio` at the last step.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))


def apply_gradients(
    params: Any, optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float | None
) -> torch.Tensor:
    """Clip the gradients to `max_grad_norm` (none: no clipping), step the optimizer and the LR schedule.

    Returns the total gradient norm before clipping (logged by the stages)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(
        params, max_grad_norm if max_grad_norm is not None else float("inf")
    )
    optimizer.step()
    scheduler.step()
    return grad_norm


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; a statistic without data
    return v


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps ≤ `step` (those after the checkpoint are recomputed by the resumed run)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if row.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _check_resume_config(cfg: LoopConfig, ckpt: Path) -> None:
    saved = read_yaml(ckpt / "config.yaml")
    now = config_to_dict(cfg)
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_MUTABLE and saved.get(k) != now.get(k))
    if diff:
        detail = "; ".join(f"{k}: {saved.get(k)!r} → {now.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"cannot resume from {ckpt}: the config differs in {detail}. Resume with the checkpoint's config "
            f"({ckpt / 'config.yaml'}), or start a new run in another output_dir (or checkpoint.resume=never)."
        )


def find_resume(cfg: LoopConfig) -> Path | None:
    """The checkpoint this run continues from (None: a fresh start), after checking that it may.

    Cheap; stages call it first, so a refused resume fails before any teacher extraction or model loading.
    """
    ckpt = _find_resume(cfg, Path(cfg.output_dir))
    if ckpt is not None:
        _check_resume_config(cfg, ckpt)
    return ckpt


def _find_resume(cfg: LoopConfig, out: Path) -> Path | None:
    mode = cfg.checkpoint.resume
    latest = latest_checkpoint(out)
    if mode == "auto":
        return latest
    if mode == "never":
        if latest is not None:
            raise CheckpointError(
                f"{out} already holds checkpoints (newest {latest.name}) and checkpoint.resume=never; choose a new "
                "output_dir, delete the old run, or resume (checkpoint.resume=auto)"
            )
        return None
    path = Path(mode)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint.resume: {path} is not a checkpoint directory")
    return path


def _log_line(console: Any, row: Mapping[str, Any], total: int) -> None:
    extras = " ".join(
        f"{k}={v:.4g}"
        for k, v in row.items()
        if k not in ("step", "lr", "loss", "seconds", "examples_per_s", "epoch", "batch_in_epoch")
        and isinstance(v, float)
    )
    loss = row.get("loss")
    console.print(
        f"[bold]step {row['step']}/{total}[/] loss={loss if loss is None else f'{loss:.5f}'} lr={row['lr']:.3g} "
        f"{row['examples_per_s']:.1f} ex/s {extras}"
    )


def run_steps(
    cfg: LoopConfig,
    trainable: Trainable,
    plan: BatchPlan,
    step_fn: StepFn,
    *,
    total: int,
    console: Any | None = None,
) -> StepsResult:
    """Run (or resume) `total` optimizer steps of `step_fn` on `trainable`; write metrics and checkpoints.

    A resume continues from `find_resume(cfg)` (refused when the config changed). Seed (`seed_everything`) before
    building the model so its init is reproducible. Under torchrun every rank runs this function.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    out = Path(cfg.output_dir)
    main = distributed.is_main()
    params = trainable.parameters()
    distributed.broadcast_parameters(params)  # every rank starts from rank 0's init
    optimizer = build_optimizer(params, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total)
    metrics_path = out / METRICS_FILE

    resumed_from = find_resume(cfg)
    start = 0
    if resumed_from is not None:
        state = load_checkpoint(resumed_from, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
        start = int(state["step"])
        if main:
            console.print(f"resumed from {resumed_from} at step {start}/{total}")
    if main:
        _truncate_metrics(metrics_path, start)  # a fresh start drops the rows of an earlier, unresumable run
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)  # a run killed mid-write leaves its temp file (the write itself is redone)
        prune_checkpoints(out, cfg.checkpoint.keep_last)  # finish a prune that a kill interrupted
        save_config(cfg, out / "config.yaml")
    distributed.barrier()

    trainable.module.train()
    last: dict[str, Any] = {}
    for step in range(start, total):
        t0 = time.perf_counter()
        batch = plan.global_batch(step)
        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad(set_to_none=True)
        metrics = dict(step_fn(step, batch))
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"step {step + 1}: the loss is {loss}; lower optim.lr, or check the data of this step "
                f"({plan.position(step)})"
            )
        distributed.all_reduce_gradients(params)
        grad_norm = apply_gradients(params, optimizer, scheduler, cfg.optim.max_grad_norm)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"step": step + 1, "lr": lr}
        row.update({k: _plain(v) for k, v in metrics.items()})
        row.update(
            grad_norm=_plain(grad_norm),
            seconds=seconds,
            examples_per_s=len(batch) / seconds,
            **plan.position(step),
        )
        last = row
        if main:
            with metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if (step + 1) % cfg.log_every == 0 or step == start or step + 1 == total:
                _log_line(console, row, total)
        every = cfg.checkpoint.every_steps
        if every and (step + 1) % every == 0:
            ckpt = save_checkpoint(
                out,
                trainable=trainable,
                optimizer=optimizer,
                scheduler=scheduler,
                step=step + 1,
                position=plan.position(step + 1),
                config=cfg,
                metrics={k: v for k, v in row.items() if isinstance(v, int | float)},
            )
            if main:
                prune_checkpoints(out, cfg.checkpoint.keep_last)
                console.print(f"checkpoint {ckpt}")
    return StepsResult(out, total, resumed_from, last)


def train_loop(
    cfg: TrainConfig,
    student: Any,
    plan: BatchPlan,
    step_fn: StepFn,
    *,
    console: Any | None = None,
) -> LoopResult:
    """Run (or resume) a UniME stage to `total_steps`; write checkpoints, metrics, the final adapter (and merged
    model).

    `student` is a `train.student.Student`; seed (`seed_everything`) before building it so the LoRA init is
    reproducible. Under torchrun call `distributed.init_distributed()` first; every rank runs this function.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    steps = run_steps(cfg, LoraAdapter(student), plan, step_fn, total=total_steps(cfg, plan), console=console)
    out = steps.output_dir
    adapter_dir = out / "adapter"
    merged_dir = out / "merged" if cfg.checkpoint.merge else None
    if distributed.is_main():
        save_adapter(student, adapter_dir, cfg)
        console.print(f"adapter → {adapter_dir}")
        if merged_dir is not None:
            save_merged(student.source, adapter_dir, merged_dir, trust_remote_code=cfg.trust_remote_code)
            console.print(f"merged model → {merged_dir}")
    distributed.barrier()
    return LoopResult(out, steps.final_step, adapter_dir, merged_dir, steps.resumed_from, steps.last_metrics)
