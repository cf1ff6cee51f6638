"""`uniretrieve train stage2`: hard-negative enhanced instruction tuning over `uniretrieve.train.stage2`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uniretrieve.cli.train_options import (
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


def stage2(
    config: ConfigOpt = "stage2-tiny",
    sets: SetOpt = None,
    output_dir: OutputOpt = None,
    model: ModelOpt = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="MMEB-train folder: one sub-folder of Parquet files per subset."),
    ] = None,
    image_root: Annotated[Path | None, typer.Option(help="Folder the image paths are relative to.")] = None,
    max_steps: MaxStepsOpt = None,
    merge: MergeOpt = None,
    resume: ResumeOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Stage 2: instruction tuning with false-negative filtering and top-k hard negatives (InfoNCE, GradCache)."""
    from uniretrieve.models.images import ImageLoadError
    from uniretrieve.train.stage2 import Stage2Config, run_stage2
    from uniretrieve.train.stage2_data import Stage2DataError

    values = {
        **run_values(model, output_dir, merge, resume),
        "data.root": str(data) if data else None,
        "data.image_root": str(image_root) if image_root else None,
        "trust_remote_code": True if trust_remote_code else None,
    }
    run_stage(
        Stage2Config,
        run_stage2,
        config,
        max_steps_overrides(sets, max_steps),
        values,
        (Stage2DataError, ImageLoadError),
    )
