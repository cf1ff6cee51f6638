"""Loaders of the public benchmark layouts, on small fixtures written here, and their missing-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.eval_helpers import (
    mmeb_classification_rows,
    mmeb_retrieval_rows,
    write_e5v,
    write_mmeb,
    write_sharegpt4v,
    write_sugarcrepe,
    write_urban1k,
)
from uniretrieve.eval.datasets_longcap import first_array_items, load_sharegpt4v, load_urban1k
from uniretrieve.eval.datasets_mmeb import load_mmeb_dataset
from uniretrieve.eval.datasets_retrieval import load_e5v_retrieval
from uniretrieve.eval.datasets_sugarcrepe import load_sugarcrepe
from uniretrieve.eval.metrics import SUGARCREPE_CATEGORIES
from uniretrieve.eval.mmeb_tasks import MMEB_BY_NAME, MMEB_DATASETS, MMEBDataset, task_table
from uniretrieve.eval.records import MissingDataError


@pytest.mark.parametrize(("name", "column", "files"), [("flickr30k", "text", 1), ("coco", "caption", 2)])
def test_e5v_first_five_captions_in_image_order(tmp_path: Path, name: str, column: str, files: int) -> None:
    caps = write_e5v(tmp_path, n_images=3, captions=6, column=column, files=files)
    rs = load_e5v_retrieval(tmp_path, name)
    assert len(rs.images) == 3 and len(rs.texts) == 15
    assert [t.text for t in rs.texts] == [c for per in caps for c in per[:5]]
    assert rs.text_to_image.tolist() == np.repeat(np.arange(3), 5).tolist()
    # Inline image bytes decode to the written pixels, in row order.
    got = np.asarray(rs.images[2].to_item().image)
    assert np.array_equal(got, np.asarray(make_image(2, (40, 32))))


def test_e5v_missing_data_names_the_download(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"royokong/flickr30k_test"):
        load_e5v_retrieval(tmp_path / "nope", "flickr30k")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match=r"royokong/coco_test.*--local-dir"):
        load_e5v_retrieval(tmp_path / "empty", "coco")


def test_first_array_items_reads_incrementally(tmp_path: Path) -> None:
    data = [{"a": i, "s": "x" * (i % 7), "n": [i, 1.5, None, True]} for i in range(30)] + [12345, "tail"]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(data, indent=2))
    for chunk in (3, 16, 1 << 20):
        assert first_array_items(p, 10, chunk_chars=chunk) == data[:10]
        assert first_array_items(p, 100, chunk_chars=chunk) == data
    p.write_text('{"not": "an array"}')
    with pytest.raises(ValueError, match="array"):
        first_array_items(p, 1)


def test_sharegpt4v_first_entries_and_newlines(tmp_path: Path) -> None:
    pairs = write_sharegpt4v(tmp_path, n=4)
    rs = load_sharegpt4v(tmp_path, count=3)
    assert [t.text for t in rs.texts] == [c for _, c in pairs[:3]]
    assert "\n" not in rs.texts[0].text
    assert [s.image_path for s in rs.images] == [str(tmp_path / r) for r, _ in pairs[:3]]
    assert rs.text_to_image.tolist() == [0, 1, 2] and "warning" not in rs.info
    full = load_sharegpt4v(tmp_path)  # fewer than 1000 entries: all of them, with a warning
    assert len(full.texts) == 4 and "1000" in str(full.info["warning"])


def test_sharegpt4v_image_root_and_missing_files(tmp_path: Path) -> None:
    pairs = write_sharegpt4v(tmp_path / "img", n=2)
    (tmp_path / "meta").mkdir()
    (tmp_path / "img" / "share-captioner_coco_lcs_sam_1246k_1107.json").rename(
        tmp_path / "meta" / "share-captioner_coco_lcs_sam_1246k_1107.json"
    )
    with pytest.raises(MissingDataError, match=pairs[0][0]):
        load_sharegpt4v(tmp_path / "meta")
    rs = load_sharegpt4v(tmp_path / "meta", image_root=tmp_path / "img")
    assert rs.info["image_root"] == str(tmp_path / "img")
    (tmp_path / "img" / pairs[1][0]).unlink()
    with pytest.raises(MissingDataError, match="1 ShareGPT4V image"):
        load_sharegpt4v(tmp_path / "meta", image_root=tmp_path / "img")
    with pytest.raises(MissingDataError, match="Lin-Chen/ShareGPT4V"):
        load_sharegpt4v(tmp_path / "nothing")


def test_urban1k_pairs_and_errors(tmp_path: Path) -> None:
    pairs = write_urban1k(tmp_path / "Urban1k", n=3)
    rs = load_urban1k(tmp_path)  # also finds the Urban1k/ sub-folder of the hub download
    assert [t.text for t in rs.texts] == [c for _, c in pairs]
    assert [Path(s.image_path).name for s in rs.images] == [n for n, _ in pairs]
    (tmp_path / "Urban1k" / "image" / "2.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"2\.txt has no image .*2\.jpg"):
        load_urban1k(tmp_path / "Urban1k")
    with pytest.raises(MissingDataError, match="BeichenZhang/Urban1k"):
        load_urban1k(tmp_path / "missing")


@pytest.mark.parametrize("in_data", [True, False])
def test_sugarcrepe_categories(tmp_path: Path, in_data: bool) -> None:
    written = write_sugarcrepe(tmp_path, per_category=2, in_data=in_data)
    sets = load_sugarcrepe(tmp_path)
    assert [s.name for s in sets] == list(SUGARCREPE_CATEGORIES)
    s = sets[3]
    assert [p.text for p in s.positives] == [written[s.name][k]["caption"] for k in ("0", "1")]
    assert [n.text for n in s.negatives] == [written[s.name][k]["negative_caption"] for k in ("0", "1")]
    assert s.images[1].image_path == str(tmp_path / "val2017" / written[s.name]["1"]["filename"])
    only = load_sugarcrepe(tmp_path, ["swap_att", "add_obj"])
    assert [x.name for x in only] == ["swap_att", "add_obj"]


def test_sugarcrepe_missing_files(tmp_path: Path) -> None:
    written = write_sugarcrepe(tmp_path, per_category=1, categories=("replace_obj", "swap_obj"))
    with pytest.raises(MissingDataError, match=r"add_att\.json.*RAIVNLab/sugar-crepe"):
        load_sugarcrepe(tmp_path)
    assert len(load_sugarcrepe(tmp_path, ["swap_obj"])) == 1
    (tmp_path / "val2017" / written["swap_obj"]["0"]["filename"]).unlink()
    with pytest.raises(MissingDataError, match=r"swap_obj\.json item 0: image"):
        load_sugarcrepe(tmp_path, ["replace_obj", "swap_obj"])
    with pytest.raises(ValueError, match="unknown SugarCrepe"):
        load_sugarcrepe(tmp_path, ["replace_color"])
    (tmp_path / "data" / "swap_obj.json").write_text("{}")  # a category with no item is left out
    assert [s.name for s in load_sugarcrepe(tmp_path, ["replace_obj", "swap_obj"])] == ["replace_obj"]
    with pytest.raises(ValueError, match="empty"):
        load_sugarcrepe(tmp_path, ["swap_obj"])


def test_mmeb_dedupe_and_target_first(tmp_path: Path) -> None:
    write_mmeb(tmp_path, "ImageNet-1K", mmeb_classification_rows("ImageNet-1K", n=4, classes=3))
    s = load_mmeb_dataset(tmp_path, MMEB_BY_NAME["ImageNet-1K"])
    assert s.n_rows == 4 and s.n_candidate_refs == 12
    assert len(s.candidates) == 3  # the class names are shared by every row: encoded once
    assert len(s.queries) == 4
    for r in range(4):
        assert s.candidates[s.candidate_index[r][0]].text == f"class {r % 3}"  # the target stays first
        assert s.candidates[s.candidate_index[r][0]].image_path is None
    assert s.queries[0].image_path == str(tmp_path / "eval_images" / "ImageNet-1K" / "img_0.jpg")
    assert s.queries[0].text.startswith("<|image_1|>")

    write_mmeb(tmp_path, "NIGHTS", mmeb_retrieval_rows("NIGHTS", n=3))
    r = load_mmeb_dataset(tmp_path, MMEB_BY_NAME["NIGHTS"])
    assert len(r.candidates) == 3 and r.queries[1].image_path is None
    assert [Path(r.candidates[r.candidate_index[i][0]].image_path).name for i in range(3)] == [
        "cand_0.jpg",
        "cand_1.jpg",
        "cand_2.jpg",
    ]


def test_mmeb_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="TIGER-Lab/MMEB-eval"):
        load_mmeb_dataset(tmp_path / "none", MMEB_BY_NAME["VOC2007"])
    tmp_path.joinpath("x").mkdir()
    with pytest.raises(MissingDataError, match=r"MMEB dataset VOC2007 not found"):
        load_mmeb_dataset(tmp_path, MMEB_BY_NAME["VOC2007"])
    write_mmeb(tmp_path, "VOC2007", mmeb_classification_rows("VOC2007", n=2))
    (tmp_path / "eval_images" / "VOC2007" / "img_1.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"img_1\.jpg .*row 1 query"):
        load_mmeb_dataset(tmp_path, MMEB_BY_NAME["VOC2007"])
    (tmp_path / "eval_images").rename(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "VOC2007" / "img_1.jpg").write_bytes(
        b""
    )  # exists again (content is not read here)
    with pytest.raises(MissingDataError, match="image-root"):
        load_mmeb_dataset(tmp_path, MMEB_BY_NAME["VOC2007"])
    s = load_mmeb_dataset(tmp_path, MMEB_BY_NAME["VOC2007"], image_root=tmp_path / "elsewhere")
    assert s.queries[0].image_path.startswith(str(tmp_path / "elsewhere"))


def test_mmeb_task_table_from_datasets_json(tmp_path: Path) -> None:
    assert task_table(tmp_path) == MMEB_DATASETS
    (tmp_path / "datasets.json").write_text(json.dumps([{"name": "Scene_VQA_Count", "meta_task": "VQA"}]))
    assert task_table(tmp_path) == (MMEBDataset("Scene_VQA_Count", "VQA", False),)
    (tmp_path / "datasets.json").write_text(json.dumps([{"name": "X", "meta_task": "Captioning"}]))
    with pytest.raises(ValueError, match="meta_task must be one of"):
        task_table(tmp_path)


def test_e5v_reads_the_parquet_converter_layout(tmp_path: Path) -> None:
    """The hub's `refs/convert/parquet` branch stores `default/test/0000.parquet`; it reads the same."""
    caps = write_e5v(tmp_path / "src", n_images=2, captions=5)
    (tmp_path / "conv" / "default" / "test").mkdir(parents=True)
    (tmp_path / "src" / "data" / "test-00000-of-00001.parquet").rename(
        tmp_path / "conv" / "default" / "test" / "0000.parquet"
    )
    rs = load_e5v_retrieval(tmp_path / "conv", "flickr30k")
    assert [t.text for t in rs.texts] == [c for per in caps for c in per]
