"""The 36 MMEB-v1 image datasets, their meta-task and their IND/OOD split, as data.

Source: docs/benchmarks.md#mmeb-datasets (VLM2Vec v1 / MMEB-eval card, as used by UniME Table 1 and UniME-V2).
Names are the configuration names of the Hugging Face dataset `TIGER-Lab/MMEB-eval`, which are also its folder
names. The extra config `CIFAR-100` in that repository is not one of the 36: it runs when asked for by name
(UniME's README passes it) and is reported apart, outside every aggregate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

META_TASKS: tuple[str, ...] = ("Classification", "VQA", "Retrieval", "Grounding")
"""In the column order of UniME Table 1 (Cls, VQA, Ret, Gnd)."""


@dataclass(frozen=True)
class MMEBDataset:
    name: str
    meta_task: str
    ood: bool
    """True for the 16 out-of-distribution datasets (not in MMEB-train)."""
    extra: bool = False
    """Not one of the table's datasets (`EXTRA_DATASETS`): scored on request, never aggregated."""


def _rows(meta_task: str, ind: tuple[str, ...], ood: tuple[str, ...]) -> tuple[MMEBDataset, ...]:
    return tuple(MMEBDataset(n, meta_task, False) for n in ind) + tuple(
        MMEBDataset(n, meta_task, True) for n in ood
    )


MMEB_DATASETS: tuple[MMEBDataset, ...] = (
    *_rows(
        "Classification",
        ("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397"),
        ("Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    ),
    *_rows(
        "VQA",
        ("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W"),
        ("ScienceQA", "VizWiz", "GQA", "TextVQA"),
    ),
    *_rows(
        "Retrieval",
        (
            "VisDial",
            "CIRR",
            "VisualNews_t2i",
            "VisualNews_i2t",
            "MSCOCO_t2i",
            "MSCOCO_i2t",
            "NIGHTS",
            "WebQA",
        ),
        ("FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"),
    ),
    *_rows("Grounding", ("MSCOCO",), ("RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing")),
)

MMEB_BY_NAME: dict[str, MMEBDataset] = {d.name: d for d in MMEB_DATASETS}

EXTRA_DATASETS: tuple[MMEBDataset, ...] = (MMEBDataset("CIFAR-100", "Classification", False, extra=True),)
"""Configs of TIGER-Lab/MMEB-eval outside the 36: accepted by `--subsets`, reported outside the Overall."""


def resolve_subsets(
    subsets: list[str] | None, table: Sequence[MMEBDataset] = MMEB_DATASETS
) -> list[MMEBDataset]:
    """Requested names (any case) → table rows in table order, then requested extras (`EXTRA_DATASETS`, with the
    standard table only); None or empty → the whole table (all 36, no extras)."""
    if not subsets:
        return list(table)
    known = (*table, *(EXTRA_DATASETS if tuple(table) == MMEB_DATASETS else ()))
    lower = {d.name.lower(): d for d in known}
    unknown = [s for s in subsets if s.lower() not in lower]
    if unknown:
        extras = [d.name for d in known if d.extra]
        raise ValueError(
            f"unknown MMEB dataset(s): {', '.join(unknown)}. The {len(table)} are: {', '.join(d.name for d in table)}"
            + (f" (also accepted, reported apart: {', '.join(extras)})" if extras else "")
        )
    wanted = {s.lower() for s in subsets}
    return [d for d in known if d.name.lower() in wanted]


TABLE_FILE = "datasets.json"


def task_table(root: str | Path) -> tuple[MMEBDataset, ...]:
    """The datasets of an MMEB-layout folder: the 36 of MMEB-v1, unless the folder has a `datasets.json`
    (`[{"name", "meta_task", "ood"?}]`, as the scene generator writes for its own MMEB-style sets)."""
    path = Path(root) / TABLE_FILE
    if not path.is_file():
        return MMEB_DATASETS
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        table = tuple(
            MMEBDataset(str(r["name"]), str(r["meta_task"]), bool(r.get("ood", False))) for r in rows
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} must be a JSON list of {{'name', 'meta_task', 'ood'?}} objects: {exc}"
        ) from exc
    bad = [d.name for d in table if d.meta_task not in META_TASKS]
    if bad or not table:
        raise ValueError(f"{path}: meta_task must be one of {', '.join(META_TASKS)} (bad: {', '.join(bad)})")
    return table
