"""Stage 1 — textual discriminative knowledge distillation (UniME paper §3.2; docs/method.md#stage-1).

Data flow:  stage1_data (rows → texts) → teacher (cached teacher embeddings of every text, computed once)
→ student (MLLM + LoRA on the language model, text prompt, last-token pooling) → losses.kd_kl_loss on the
in-batch similarity matrices → gradcache (full-matrix loss, chunked forwards) → loop (AdamW, schedule,
checkpoints, logging).

The KD loss needs the whole n×n matrix (the paper's n is 768), so one step is a cached large batch
(train/gradcache.py): every chunk of the local batch is embedded without gradients, the loss and its gradient are
computed on the full (globally gathered) matrix, and each chunk is re-run with backward. Under torchrun each rank
embeds its slice of the global batch and `gather_with_grad` assembles the global matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from uniretrieve.train import distributed
from uniretrieve.train.batching import ShuffledEpochs, local_slice
from uniretrieve.train.config import ConfigError, LoraConfig, OptimConfig, TrainConfig
from uniretrieve.train.gradcache import gradcache_step
from uniretrieve.train.loop import StageResult
from uniretrieve.train.losses import kd_kl_loss
from uniretrieve.train.stage1_data import Stage1Data, Stage1DataConfig, load_stage1_data
from uniretrieve.train.teacher import TeacherConfig, teacher_embeddings
from uniretrieve.types import Item


@dataclass(kw_only=True)
class KDConfig:
    """Options of `kd_kl_loss`; the defaults and their reasons are in its docstring (train/losses.py)."""

    temperature: float = 0.05
    direction: Literal["teacher_student", "student_teacher"] = "teacher_student"
    include_diagonal: bool = False
    reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"kd.temperature must be > 0; got {self.temperature}")


def _stage1_optim() -> OptimConfig:
    # Paper Table 6 (docs/method.md#stage-1-settings): lr 5e-4 for stage 1; warmup 100 as in E5-V's run.sh
    # (the paper states none).
    return OptimConfig(lr=5e-4, warmup_steps=100, schedule="cosine")


def _stage1_lora() -> LoraConfig:
    # Paper Table 6/8: rank 32 for stage 1; alpha 16 and dropout 0.05 are E5-V's values
    # (docs/method.md#stage-1-settings).
    return LoraConfig(r=32, alpha=16, dropout=0.05)


@dataclass(kw_only=True)
class Stage1Config(TrainConfig):
    """A stage-1 run: the shared training settings plus data, teacher and KD-loss sections."""

    data: Stage1DataConfig
    teacher: TeacherConfig
    kd: KDConfig = field(default_factory=KDConfig)
    optim: OptimConfig = field(default_factory=_stage1_optim)
    lora: LoraConfig = field(default_factory=_stage1_lora)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora.vision:
            raise ConfigError(
                "lora.vision must be false in stage 1: only the language model is distilled (UniME paper §3.2)"
            )
        if self.prompt_regime != "e5v":
            raise ConfigError("stage 1 uses the e5v text prompt ('Summary above sentence in one word:')")


def kd_loss_fn(teacher: torch.Tensor, kd: KDConfig) -> Any:
    """`local student reps → loss dict` over the global batch; `teacher` holds the global batch's rows in order."""

    def loss_fn(local: torch.Tensor) -> Mapping[str, torch.Tensor]:
        student = distributed.gather_with_grad(local)
        return kd_kl_loss(
            student,
            teacher,
            temperature=kd.temperature,
            direction=kd.direction,
            include_diagonal=kd.include_diagonal,
            reduction=kd.reduction,
        )

    return loss_fn


def make_step_fn(
    student: Any,
    data: Stage1Data,
    teacher: torch.Tensor,
    text_rows: Mapping[str, int],
    cfg: Stage1Config,
) -> Any:
    """The loop's step function: global batch of examples → gradients of the KD loss accumulated in the LoRA.

    teacher: [U, d_t] float32 teacher embeddings of every text, kept on the CPU (NV-Embed-v2 on the full NLI set
    is ~9 GB; only the batch's rows go to the device); text_rows: text → row of `teacher`.
    """

    def step(step: int, global_batch: list[int]) -> dict[str, torch.Tensor]:
        texts_global = data.batch_texts(global_batch)
        texts_local = data.batch_texts(local_slice(global_batch))
        rows = torch.tensor([text_rows[t] for t in texts_global])
        # Tokenize the local batch once: chunks then share the full batch's padding, so each chunk's forward sees
        # the same tensors as one full-batch forward would (left padding shifts positions; rotary models are
        # invariant to the shift only up to rounding).
        prepared = student.prepare([Item(text=t) for t in texts_local])
        out = gradcache_step(
            [student.embed],
            [prepared.inputs],
            kd_loss_fn(teacher.index_select(0, rows).to(student.device), cfg.kd),
            chunk_size=cfg.chunk_size,
            loss_scale=distributed.ddp_loss_scale(),
        )
        out["truncated"] = torch.tensor(float(prepared.truncated))
        return out

    return step


@dataclass
class Stage1Result(StageResult):
    teacher_computed: int


def run_stage1(cfg: Stage1Config, *, console: Any | None = None) -> Stage1Result:
    """Run (or resume) stage 1 end to end: data, cached teacher, student, loop, adapter (and merged model)."""
    from rich.console import Console

    from uniretrieve.models.device import resolve_device
    from uniretrieve.train.loop import find_resume, seed_everything, train_loop
    from uniretrieve.train.student import student_for

    console = console or Console(stderr=True)
    distributed.init_distributed()
    device = resolve_device(cfg.device)
    find_resume(cfg)  # a refused resume fails here, before the teacher or the student is loaded

    data = load_stage1_data(cfg.data)
    if distributed.is_main():
        skipped = f", {data.skipped} incomplete rows skipped" if data.skipped else ""
        console.print(
            f"data: {len(data.rows)} rows from {data.source} → {data.num_examples} examples of "
            f"{data.texts_per_example} text(s) ({data.unit} policy, fields {data.fields}){skipped}"
        )
    texts = data.unique_texts()
    teach = teacher_embeddings(texts, cfg.teacher, device=str(device), show_progress=distributed.is_main())
    if distributed.is_main():
        console.print(
            f"teacher: {len(texts)} texts, dim {teach.spec.dim}, {teach.computed} encoded now, "
            f"{len(texts) - teach.computed} from the cache {teach.cache_dir}"
        )
    teacher = torch.from_numpy(np.ascontiguousarray(teach.vectors))
    text_rows = {t: i for i, t in enumerate(texts)}

    seed_everything(cfg.seed)
    student = student_for(cfg, device)
    plan = ShuffledEpochs(data.num_examples, data.examples_per_batch(cfg.batch_size), seed=cfg.seed)
    result = train_loop(
        cfg, student, plan, make_step_fn(student, data, teacher, text_rows, cfg), console=console
    )
    return Stage1Result.from_loop(result, teacher_computed=teach.computed)
