"""Paper rows matched to models, published numbers in the results' layout, and the printed tables."""

from __future__ import annotations

import pytest
from rich.console import Console

from uniretrieve.eval.paper import PAPER_ROWS, find_paper_row
from uniretrieve.eval.report import paper_numbers, print_report


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("unime-llava-1.6-7b", "UniME LLaVA-1.6 (7B)"),
        ("DeepGlint-AI/UniME-Phi3.5-V-4.2B", "UniME Phi3.5-V (4.2B)"),
        ("/models/UniME-LLaVA-OneVision-7B/", "UniME LLaVA-OneVision (7B)"),
        ("UniME LLaVA-1.6 (7B)", "UniME LLaVA-1.6 (7B)"),
        ("TIGER-Lab/VLM2Vec-Full", "VLM2Vec Phi3.5-V"),
        ("/tmp/tiny/llava", None),
    ],
)
def test_find_paper_row(name: str, label: str | None) -> None:
    row = find_paper_row(name)
    assert (row.label if row else None) == label


def test_paper_rows_are_consistent() -> None:
    for row in PAPER_ROWS:
        m = row.mmeb
        # "Overall as reported" is the meta-task mean (to the paper's rounding) except for LLaVA-OneVision
        # (docs/benchmarks.md#mmeb-overall).
        meta_mean = sum(m[k] for k in ("Classification", "VQA", "Retrieval", "Grounding")) / 4
        if "OneVision" not in row.label:
            assert m["overall_reported"] == pytest.approx(meta_mean, abs=0.06), row.label
        assert set(row.retrieval) == {"flickr30k", "coco", "sharegpt4v", "urban1k"}
    assert len(PAPER_ROWS[0].mmeb_datasets) == 36


def _retrieval_result(paper: dict | None) -> dict:
    scores = {
        "t2i": {"R@1": 80.0, "R@5": 95.0, "R@10": 98.0},
        "i2t": {"R@1": 94.0, "R@5": 99.0, "R@10": 100.0},
    }
    return {
        "benchmark": "flickr30k",
        "title": "Flickr30K (1K test)",
        "scores": {**scores, "images": 1000, "texts": 5000, "info": {}},
        "model": {"model_id": "m", "family": "llava_next", "prompt_regime": "e5v"},
        "embedding": {"encoded": 6000, "from_cache": 0, "texts_truncated": 0},
        "paper": paper,
    }


def _render(res: dict) -> str:
    con = Console(record=True, width=200)
    print_report(res, con)
    return con.export_text()


def test_retrieval_report_beside_the_paper() -> None:
    row = find_paper_row("unime-llava-1.6-7b")
    p = paper_numbers("flickr30k", row)
    assert p == {"row": "UniME LLaVA-1.6 (7B)", "t2i": {"R@1": 81.9}, "i2t": {"R@1": 93.4}}
    text = _render(_retrieval_result(p))
    assert "81.9" in text and "93.4" in text and "-1.9" in text and "+0.6" in text
    assert "no published numbers" in _render(_retrieval_result(None))


def test_mmeb_and_sugarcrepe_paper_numbers() -> None:
    row = find_paper_row("unime-llava-1.6-7b")
    m = paper_numbers("mmeb", row, {"standard_table": True})
    assert m["overall_36"] == 63.6 and m["overall_reported"] == 66.6 and m["datasets"]["NIGHTS"] == 66.2
    assert paper_numbers("mmeb", row, {"standard_table": False}) is None
    assert paper_numbers("sugarcrepe", row)["groups"] == {"Replace": 89.0, "Swap": 71.5, "Add": 94.4}
    assert paper_numbers("flickr30k", None) is None
