"""`generate` end to end: determinism, the public layouts read with plain readers, split disjointness, re-runs, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from uniretrieve.cli.app import app
from uniretrieve.scenes.claims import holds, parse_claim
from uniretrieve.scenes.generate import LAYOUTS, GenerateConfig, generate, retrieval_caption
from uniretrieve.scenes.negatives import CATEGORIES
from uniretrieve.scenes.spec import Scene
from uniretrieve.scenes.tasks import TASKS, TRAIN_ONLY_TASKS

Corpus = tuple[GenerateConfig, Path]
SMALL = {"train_scenes": 40, "test_scenes": 30, "mmeb_eval_rows": 12, "mmeb_eval_candidates": 8}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateConfig, Path]:
    out = tmp_path_factory.mktemp("scenes") / "a"
    cfg = GenerateConfig(out=str(out), seed=0, **SMALL)
    generate(cfg)
    return cfg, out


def _scenes(out: Path, split: str) -> list[Scene]:
    lines = (out / "scenes" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [Scene.from_dict(json.loads(line)) for line in lines]


def test_same_seed_byte_identical_other_seed_different(corpus: Corpus, tmp_path: Path) -> None:
    cfg, out = corpus
    again = generate(replace(cfg, out=str(tmp_path / "b")))
    assert not again.skipped
    first, second = _files(out), _files(tmp_path / "b")
    assert first.keys() == second.keys() and all(first[k] == second[k] for k in first)
    other = _files(generate(replace(cfg, out=str(tmp_path / "c"), seed=1, test_seed=1)).out)
    for name in (
        "short/data/test-00000-of-00001.parquet",
        "sugarcrepe/add_att.json",
        "nli/nli_for_simcse.csv",
        "mmeb-train/Scene_i2t/original-00000-of-00001.parquet",
    ):
        assert other[name] != first[name], name


def test_rerun_is_idempotent_and_other_config_refused(corpus: Corpus) -> None:
    cfg, out = corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert generate(cfg).skipped
    (out / "config.json").unlink()  # as after an interrupted run: no completion marker
    (out / ".generating.json").write_text(json.dumps({"config": {"seed": 99}, "version": "0"}))
    with pytest.raises(ValueError, match="unfinished corpus of another configuration"):
        generate(cfg)
    (out / ".generating.json").unlink()
    assert not generate(cfg).skipped
    assert not (out / ".generating.json").exists()
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "config.json"}
    assert all(after[p] == before[p] for p in after)  # unchanged files are not rewritten
    with pytest.raises(ValueError, match="another configuration"):
        generate(replace(cfg, train_scenes=41))
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}


def test_train_test_disjoint(corpus: Corpus) -> None:
    _, out = corpus
    test, train = _scenes(out, "test"), _scenes(out, "train")
    assert len(test) == 30 and len(train) == 40
    assert not {s.signature() for s in test} & {s.signature() for s in train}
    assert len({s.signature() for s in test + train}) == 70

    def names(folder: str) -> list[str]:
        return [str(p.relative_to(out)) for p in (out / folder).rglob("*")]

    assert not any("test-" in f for f in names("mmeb-train") + names("llava-pretrain"))
    for folder in ("short", "sharegpt4v", "urban1k", "sugarcrepe", "mmeb-eval"):
        assert not any("train-" in f for f in names(folder)), folder
    csv_text = (out / "nli" / "nli_for_simcse.csv").read_text(encoding="utf-8")
    assert "test-" not in csv_text


def _jpeg_ok(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        return im.size


def test_e5v_short_layout(corpus: Corpus) -> None:
    _, out = corpus
    table = pq.read_table(out / "short" / "data" / "test-00000-of-00001.parquet")
    assert table.column_names == ["image", "text"]
    assert [f.name for f in table.schema.field("image").type] == ["bytes", "path"]
    rows = table.to_pylist()
    ids = [s.scene_id for s in _scenes(out, "test")]
    assert [r["image"]["path"] for r in rows] == [f"{i}.jpg" for i in ids]
    scenes = _scenes(out, "test")
    for r, scene in zip(rows, scenes, strict=True):
        w, h = _jpeg_ok(r["image"]["bytes"])
        assert w == h == scene.image_size
        assert len(r["text"]) == 5 and len(set(r["text"])) == 5
        assert all(holds(parse_claim(t), scene) for t in r["text"]), r["text"]


def test_long_caption_layouts(corpus: Corpus) -> None:
    _, out = corpus
    ids = [s.scene_id for s in _scenes(out, "test")]
    entries = json.loads(
        (out / "sharegpt4v" / "share-captioner_coco_lcs_sam_1246k_1107.json").read_text("utf-8")
    )
    assert [e["id"] for e in entries] == ids
    for e in entries:
        assert set(e) == {"id", "image", "conversations"}
        assert e["conversations"][0]["from"] == "human" and e["conversations"][1]["from"] == "gpt"
        assert len(e["conversations"][1]["value"].split()) >= 80
        _jpeg_ok((out / "sharegpt4v" / e["image"]).read_bytes())
    captions = sorted((out / "urban1k" / "caption").iterdir())
    assert [p.stem for p in captions] == ids
    for p in captions:
        lines = p.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and len(lines[0].split()) >= 80
        _jpeg_ok((out / "urban1k" / "image" / f"{p.stem}.jpg").read_bytes())
    # The Urban1K set is a different wording from the ShareGPT4V one.
    assert lines[0] != entries[-1]["conversations"][1]["value"]


def test_sugarcrepe_layout(corpus: Corpus) -> None:
    """Plain json; every written positive is true of its image and every negative false (re-read and checked)."""
    _, out = corpus
    test = {s.scene_id: s for s in _scenes(out, "test")}
    for cat in CATEGORIES:
        data = json.loads((out / "sugarcrepe" / f"{cat}.json").read_text(encoding="utf-8"))
        assert list(data) == [str(k) for k in range(len(data))] and len(data) >= 10, cat
        for item in data.values():
            assert set(item) == {"filename", "caption", "negative_caption"}
            assert item["caption"] != item["negative_caption"]
            assert (out / "sugarcrepe" / "val2017" / item["filename"]).is_file()
            scene = test[Path(item["filename"]).stem]
            assert holds(parse_claim(item["caption"]), scene), item
            assert not holds(parse_claim(item["negative_caption"]), scene), item


def test_mmeb_eval_layout_first_candidate_is_target(corpus: Corpus) -> None:
    cfg, out = corpus
    root = out / "mmeb-eval"
    listed = json.loads((root / "datasets.json").read_text(encoding="utf-8"))
    assert {d["name"]: d["meta_task"] for d in listed} == TASKS
    test = {s.scene_id: s for s in _scenes(out, "test")}
    for name in TASKS:
        table = pq.read_table(root / name / "test-00000-of-00001.parquet")
        assert table.column_names == ["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]
        rows = table.to_pylist()
        assert len(rows) == 12
        for r in rows:
            assert len(r["tgt_text"]) == len(r["tgt_img_path"]) >= 2
            assert len(set(zip(r["tgt_text"], r["tgt_img_path"], strict=True))) == len(
                r["tgt_text"]
            )  # no duplicates
            for p in [r["qry_img_path"], *r["tgt_img_path"]]:
                assert p == "" or (root / "eval_images" / p).is_file()
            if name == "Scene_t2i":  # the target image is the scene the query caption describes
                scene_id = Path(r["tgt_img_path"][0]).stem
                assert r["qry_text"].endswith(retrieval_caption(cfg, test[scene_id])[0] + "\n")
            if name == "Scene_i2t":
                scene_id = Path(r["qry_img_path"]).stem
                assert r["tgt_text"][0] == retrieval_caption(cfg, test[scene_id])[0]
            if name == "Scene_Grounding":
                assert Path(r["tgt_img_path"][0]).stem.startswith(Path(r["qry_img_path"]).stem + "_c")
            if name == "Scene_VQA_Colour":
                scene = test[Path(r["qry_img_path"]).stem]
                shape = r["qry_text"].split("What colour is the ")[1].split()[0]
                assert any(o.colour == r["tgt_text"][0] and o.shape == shape for o in scene.objects)


def test_mmeb_train_nli_and_pretrain_layouts(corpus: Corpus) -> None:
    _, out = corpus
    root = out / "mmeb-train"
    cols = ["qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path"]
    for name in TASKS:
        table = pq.read_table(root / name / "original-00000-of-00001.parquet")
        assert table.column_names == cols
        for r in table.to_pylist():
            assert r["qry"] and (r["pos_text"] or r["pos_image_path"])
            assert r["pos_text"] != r["neg_text"]
            for p in (r["qry_image_path"], r["pos_image_path"]):
                assert p == "" or (p.startswith("images/") and (root / p).is_file())
            assert ("<|image_1|>" in r["qry"]) == bool(r["qry_image_path"])
    train = {s.scene_id: s for s in _scenes(out, "train")}
    t2i, i2t, compose = (
        pq.read_table(root / name / "original-00000-of-00001.parquet").to_pylist()
        for name in TRAIN_ONLY_TASKS
    )
    assert len(t2i) == len(i2t) == len(train) and 0.9 * len(train) <= len(compose) <= len(train)
    for r in compose:  # a bare image, a true claim about it and a false edit of that claim
        scene = train[Path(r["qry_image_path"]).stem]
        assert not r["qry"] and holds(parse_claim(r["pos_text"]), scene)
        assert not holds(parse_claim(r["neg_text"]), scene)
    assert len({r["qry_image_path"] for r in compose}) == len(compose)
    for a, b in zip(t2i, i2t, strict=True):  # a bare long caption and a bare image, both ways, same scene
        assert a["qry"] == b["pos_text"] and not a["pos_text"] and not b["qry"]
        assert a["pos_image_path"] == b["qry_image_path"] and (root / a["pos_image_path"]).is_file()
        assert len(a["qry"].split()) >= 40 and b["neg_text"] and b["neg_text"] != b["pos_text"]
        assert Path(a["pos_image_path"]).stem in train
    with open(out / "nli" / "nli_for_simcse.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and list(rows[0]) == ["sent0", "sent1", "hard_neg"]
    assert all(r["sent0"] != r["sent1"] and r["hard_neg"] not in (r["sent0"], r["sent1"]) for r in rows)
    entries = json.loads((out / "llava-pretrain" / "blip_laion_cc_sbu_558k.json").read_text(encoding="utf-8"))
    with_image = [e for e in entries if "image" in e]
    assert all((out / "llava-pretrain" / "images" / e["image"]).is_file() for e in with_image)
    assert all(e["conversations"][0]["value"].startswith("<image>\n") for e in with_image)
    requests = [e["conversations"][0]["value"] for e in with_image]
    assert requests.count("<image>\nDescribe the image.") == requests.count(
        "<image>\nDescribe the image in detail."
    )
    assert requests.count("<image>\nDescribe the image.") == 40
    # E5-V summary rows: an image, or a short caption (text only), answered with one object's colour and shape
    scenes = {
        json.loads(x)["scene_id"]: json.loads(x)
        for x in (out / "scenes" / "train.jsonl").read_text().splitlines()
    }
    summaries = [
        e for e in with_image if e["conversations"][0]["value"].endswith("Summary above image in one word:")
    ]
    assert len(summaries) >= 40
    for e in summaries:
        objs = {f"{o['colour']} {o['shape']}" for o in scenes[e["image"].removesuffix(".jpg")]["objects"]}
        assert e["conversations"][1]["value"] in objs
    text_only = [e for e in entries if "image" not in e]
    assert 20 <= len(text_only) <= 40
    for e in text_only:
        caption, ending = e["conversations"][0]["value"].rsplit("\n", 1)
        assert ending == "Summary above sentence in one word:" and "<image>" not in caption
        assert e["conversations"][1]["value"].split()[0] in caption.lower()


def test_project_loaders_read_the_generated_layouts(corpus: Corpus) -> None:
    """The evaluation harness's loaders for the real datasets read the generated folders unchanged."""
    _, out = corpus
    retrieval = pytest.importorskip("uniretrieve.eval.datasets_retrieval")
    longcap = pytest.importorskip("uniretrieve.eval.datasets_longcap")
    sugar = pytest.importorskip("uniretrieve.eval.datasets_sugarcrepe")
    mmeb = pytest.importorskip("uniretrieve.eval.datasets_mmeb")
    tasks = pytest.importorskip("uniretrieve.eval.mmeb_tasks")
    short = retrieval.load_e5v_retrieval(out / "short", "flickr30k")
    assert len(short.images) == 30 and len(short.texts) == 150
    assert len(longcap.load_sharegpt4v(out / "sharegpt4v", count=30).texts) == 30
    assert len(longcap.load_urban1k(out / "urban1k").texts) == 30
    assert len(sugar.load_sugarcrepe(out / "sugarcrepe")) == 7
    for d in json.loads((out / "mmeb-eval" / "datasets.json").read_text(encoding="utf-8")):
        loaded = mmeb.load_mmeb_dataset(
            out / "mmeb-eval", tasks.MMEBDataset(d["name"], d["meta_task"], False)
        )
        assert len(loaded.query_index) == 12


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = [
        "scenes",
        "generate",
        "--out",
        str(out),
        "--seed",
        "2",
        "--scenes",
        "6",
        "--test-scenes",
        "5",
        "--mmeb-eval-rows",
        "3",
        "--mmeb-eval-candidates",
        "4",
        "-q",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "written" in res.output
    manifest = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert manifest["config"]["seed"] == 2 and manifest["counts"]["short"] == 5
    assert "already complete" in CliRunner().invoke(app, args).output
    help_text = " ".join(
        CliRunner().invoke(app, ["scenes", "generate", "--help"], env={"COLUMNS": "200"}).output.split()
    )
    assert all(name in help_text for name in LAYOUTS)
    bad = CliRunner().invoke(app, [*args[:-1], "--layout", "nope"])
    assert bad.exit_code == 2 and "unknown layout" in bad.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    clash = CliRunner().invoke(
        app, ["scenes", "generate", "--out", str(tmp_path / "mine"), "--test-scenes", "2"]
    )
    assert clash.exit_code == 2 and "not empty" in clash.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
