"""Evaluation as the official code does it: Urban1K's caption line endings, no text truncation by default, git-LFS
pointers named, MMEB's extra CIFAR-100 reported apart, and SugarCrepe's documented image layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.eval_helpers import (
    mmeb_classification_rows,
    write_e5v,
    write_mmeb,
    write_sugarcrepe,
    write_urban1k,
)
from tests.test_eval_cli import _eval
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.eval.benchmarks import get_benchmark
from uniretrieve.eval.config import EvalConfig
from uniretrieve.eval.datasets_longcap import load_urban1k
from uniretrieve.eval.datasets_sugarcrepe import load_sugarcrepe
from uniretrieve.eval.runner import load_encoder

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 1291650\n"
)


def test_urban1k_keeps_the_line_ending_like_readlines(tmp_path: Path) -> None:
    root = tmp_path / "Urban1k"
    write_urban1k(root, n=3)
    (root / "caption" / "2.txt").write_bytes(b"no line ending at all")
    (root / "caption" / "3.txt").write_bytes(b"windows line\r\nsecond line\r\n")
    texts = [t.text for t in load_urban1k(root).texts]
    expected = []
    for name in ("1.txt", "2.txt", "3.txt"):
        with open(root / "caption" / name) as f:  # Long-CLIP's Urban1K loader
            expected.append(f.readlines()[0])
    assert texts == expected
    assert texts[0].endswith(".\n") and texts[1] == "no line ending at all" and texts[2] == "windows line\n"


def test_eval_does_not_truncate_by_default_and_encode_still_does(tiny_model_dir: Path) -> None:
    cfg = EvalConfig(benchmark="urban1k", data="x", model=str(tiny_model_dir))
    assert cfg.max_text_tokens == 0
    enc = load_encoder(cfg, get_benchmark("urban1k"))
    assert enc.max_text_tokens == 0
    long = " ".join(f"word{i}" for i in range(700))
    assert enc.input_builder.truncate_text(long) == (long, False)
    assert EncodeConfig(input="x", output="y").max_text_tokens is None  # encode: the family's 512, as before
    cut = load_encoder(
        EvalConfig(benchmark="urban1k", data="x", model=str(tiny_model_dir), max_text_tokens=8),
        get_benchmark("urban1k"),
    )
    assert cut.max_text_tokens == 8 and cut.input_builder.truncate_text(long)[1]


def test_a_long_caption_is_embedded_whole(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "Urban1k"
    write_urban1k(root, n=3)
    (root / "caption" / "1.txt").write_text(" ".join(["a long street with shops"] * 150) + "\n")
    res, out = _eval(tmp_path, tiny_model_dir, "urban1k", root)
    assert res.exit_code == 0, res.output
    assert out["embedding"]["texts_truncated"] == 0 and out["config"]["max_text_tokens"] == 0
    res, out = _eval(tmp_path, tiny_model_dir, "urban1k", root, "--max-text-tokens", "64")
    assert res.exit_code == 0 and out["embedding"]["texts_truncated"] == 1


@pytest.mark.parametrize("bench", ["flickr30k", "mmeb"])
def test_a_git_lfs_pointer_is_named(tmp_path: Path, bench: str) -> None:
    if bench == "flickr30k":
        data = tmp_path / "flickr"
        write_e5v(data)
        pointer = data / "data" / "test-00000-of-00001.parquet"
        extra: tuple[str, ...] = ()
    else:
        data = tmp_path / "mmeb"
        write_mmeb(data, "ImageNet-1K", mmeb_classification_rows("ImageNet-1K"))
        pointer = data / "ImageNet-1K" / "test-00000-of-00001.parquet"
        extra = ("--subsets", "ImageNet-1K")
    pointer.write_text(LFS_POINTER)
    res, _ = _eval(tmp_path, Path("unime-tiny"), bench, data, *extra)  # data is read before any model loads
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert str(pointer) in lines[0] and "git-LFS pointer" in lines[0] and "git lfs pull" in lines[0]


def test_cifar100_is_accepted_and_reported_outside_the_overall(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = tmp_path / "mmeb"
    write_mmeb(root, "ImageNet-1K", mmeb_classification_rows("ImageNet-1K", n=4))
    write_mmeb(root, "CIFAR-100", mmeb_classification_rows("CIFAR-100", n=3))
    res, out = _eval(tmp_path, tiny_model_dir, "mmeb", root, "--subsets", "ImageNet-1K,CIFAR-100")
    assert res.exit_code == 0, res.output
    s = out["scores"]
    assert set(s["datasets"]) == {"ImageNet-1K"} and set(s["extra_datasets"]) == {"CIFAR-100"}
    assert s["overall"] == s["datasets"]["ImageNet-1K"]["precision@1"] and s["n_datasets"] == 1
    assert s["extra_datasets"]["CIFAR-100"]["rows"] == 3
    assert "CIFAR-100" in res.output and "not in Overall" in res.output


def test_sugarcrepe_finds_the_repository_image_layout(tmp_path: Path) -> None:
    clone = tmp_path / "sugar-crepe"
    write_sugarcrepe(clone, per_category=1)
    images = clone / "data" / "coco" / "images" / "val2017"
    images.parent.mkdir(parents=True)
    shutil.move(clone / "val2017", images)  # the layout the SugarCrepe README documents
    for data in (clone, clone / "data"):
        sets = load_sugarcrepe(data)
        assert len(sets) == 7 and Path(sets[0].images[0].image_path).parent == images
