"""Published numbers of UniME (Gu et al. 2025, arXiv 2504.17432v4) to print beside ours.

Source: the paper's Table 1 (MMEB), Table 2 (zero-shot retrieval, R@1; SugarCrepe accuracy) and Table 9
(per-dataset MMEB for UniME-LLaVA-1.6), as transcribed and checked in docs/benchmarks.md#published-numbers.
"overall_reported" is the paper's "Overall" column, which for every row but LLaVA-OneVision is the mean of the four
meta-task scores; "overall_36" is the true mean over the 36 datasets where it could be recomputed
(docs/benchmarks.md#mmeb-overall). Retrieval pairs are (text→image R@1, image→text R@1); SugarCrepe triples are
(Replace, Swap, Add).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PaperRow:
    label: str
    """The row as the paper prints it."""
    aliases: tuple[str, ...] = ()
    """Model names and checkpoint ids this row describes (matched case-insensitively, also by last path part)."""
    mmeb: dict[str, float | None] = field(default_factory=dict)
    mmeb_datasets: dict[str, float] = field(default_factory=dict)
    retrieval: dict[str, tuple[float, float]] = field(default_factory=dict)
    sugarcrepe: tuple[float, float, float] | None = None


def _mmeb(
    cls: float, vqa: float, ret: float, gnd: float, ind: float, ood: float, rep: float, m36: float | None
):
    return {
        "Classification": cls,
        "VQA": vqa,
        "Retrieval": ret,
        "Grounding": gnd,
        "IND": ind,
        "OOD": ood,
        "overall_reported": rep,
        "overall_36": m36,
    }


def _ret(f: tuple, c: tuple, s: tuple, u: tuple) -> dict[str, tuple[float, float]]:
    return {"flickr30k": f, "coco": c, "sharegpt4v": s, "urban1k": u}


_UNIME_LLAVA16_TABLE9 = {
    "ImageNet-1K": 71.3,
    "N24News": 79.5,
    "HatefulMemes": 64.6,
    "VOC2007": 90.4,
    "SUN397": 75.9,
    "Place365": 45.6,
    "ImageNet-A": 45.5,
    "ImageNet-R": 78.4,
    "ObjectNet": 36.4,
    "Country211": 18.7,
    "OK-VQA": 68.3,
    "A-OKVQA": 58.7,
    "DocVQA": 67.6,
    "InfographicsVQA": 37.0,
    "ChartQA": 33.4,
    "Visual7W": 51.7,
    "ScienceQA": 40.5,
    "VizWiz": 42.7,
    "GQA": 63.6,
    "TextVQA": 65.2,
    "VisDial": 79.7,
    "CIRR": 52.2,
    "VisualNews_t2i": 74.8,
    "VisualNews_i2t": 78.8,
    "MSCOCO_t2i": 74.9,
    "MSCOCO_i2t": 73.8,
    "NIGHTS": 66.2,
    "WebQA": 89.8,
    "FashionIQ": 16.5,
    "Wiki-SS-NQ": 66.6,
    "OVEN": 55.7,
    "EDIS": 86.2,
    "MSCOCO": 76.5,
    "RefCOCO": 89.3,
    "RefCOCO-Matching": 90.6,
    "Visual7W-Pointing": 84.1,
}

PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow(
        "UniME LLaVA-1.6 (7B)",
        ("unime-llava-1.6-7b", "DeepGlint-AI/UniME-LLaVA-1.6-7B"),
        _mmeb(60.6, 52.9, 67.9, 85.1, 68.4, 57.9, 66.6, 63.6),
        _UNIME_LLAVA16_TABLE9,
        _ret((81.9, 93.4), (53.7, 70.1), (93.9, 97.2), (95.2, 95.9)),
        (89.0, 71.5, 94.4),
    ),
    PaperRow(
        "UniME Phi3.5-V (4.2B)",
        ("unime-phi3.5-v-4.2b", "DeepGlint-AI/UniME-Phi3.5-V-4.2B"),
        _mmeb(54.8, 55.9, 64.5, 81.8, 68.2, 52.7, 64.2, 61.3),
        {},
        _ret((77.0, 88.2), (49.8, 66.8), (92.1, 96.4), (92.7, 95.1)),
        (90.1, 70.9, 93.3),
    ),
    PaperRow(
        "UniME LLaVA-OneVision (7B)",
        ("unime-llava-onevision-7b", "DeepGlint-AI/UniME-LLaVA-OneVision-7B"),
        _mmeb(66.8, 66.6, 70.6, 90.9, 74.6, 65.8, 70.7, 70.7),
        {},
        _ret((83.3, 94.4), (54.8, 74.0), (93.9, 89.3), (94.3, 95.5)),
        (80.5, 65.5, 82.2),
    ),
    PaperRow(
        "UniME† LLaVA-1.6 (stage 1 only)",
        (),
        _mmeb(43.0, 17.7, 42.5, 63.2, 37.6, 38.6, 41.6, 38.0),
        {},
        _ret((77.2, 84.6), (51.0, 56.4), (89.8, 86.9), (91.3, 82.4)),
        (89.5, 64.8, 94.2),
    ),
    PaperRow(
        "UniME† Phi3.5-V (stage 1 only)",
        (),
        _mmeb(42.5, 18.3, 40.5, 59.9, 36.0, 38.3, 40.3, 37.0),
        {},
        _ret((72.0, 80.6), (44.9, 57.2), (86.8, 92.3), (85.1, 86.9)),
        (90.2, 67.6, 91.2),
    ),
    PaperRow(
        "E5-V LLaVA-1.6",
        ("royokong/e5-v",),
        _mmeb(39.7, 10.8, 39.4, 60.2, 34.2, 33.4, 37.5, 33.8),
        {},
        _ret((77.3, 85.7), (49.1, 57.6), (85.1, 82.1), (88.9, 83.2)),
        (86.3, 68.7, 66.9),
    ),
    PaperRow(
        "E5-V Phi3.5-V",
        (),
        _mmeb(39.1, 9.6, 38.0, 57.6, 33.1, 31.9, 36.1, 32.6),
        {},
        _ret((72.2, 79.6), (44.7, 53.4), (86.0, 88.5), (83.8, 83.6)),
        (88.2, 66.6, 75.3),
    ),
    PaperRow(
        "VLM2Vec LLaVA-1.6",
        ("TIGER-Lab/VLM2Vec-LLaVa-Next",),
        _mmeb(56.8, 50.4, 63.3, 82.6, 64.9, 53.9, 63.3, 60.1),
        {},
        _ret((76.0, 90.6), (46.8, 66.6), (85.8, 90.7), (84.7, 90.8)),
        (85.8, 66.3, 86.5),
    ),
    PaperRow(
        "VLM2Vec Phi3.5-V",
        ("TIGER-Lab/VLM2Vec-Full",),
        _mmeb(54.8, 54.9, 62.3, 79.5, 66.5, 52.0, 62.9, 60.1),
        {},
        _ret((68.7, 83.0), (43.7, 59.8), (90.1, 92.0), (87.9, 86.8)),
        (86.2, 66.7, 84.2),
    ),
)


def _norm(s: str) -> set[str]:
    s = s.strip().rstrip("/").lower()
    return {s, s.split("/")[-1]}


def find_paper_row(*names: str | None) -> PaperRow | None:
    """The row whose label or an alias matches one of `names` (a registered name, hub id, or checkpoint path)."""
    keys: set[str] = set()
    for n in names:
        if n:
            keys |= _norm(str(Path(n))) | _norm(n)
    for row in PAPER_ROWS:
        if keys & {row.label.lower()}:
            return row
        for a in row.aliases:
            if keys & _norm(a):
                return row
    return None
