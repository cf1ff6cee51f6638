"""End to end through Typer's CliRunner: encode → index build → search, on a tiny real model; plus query parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.encode_helpers import make_mixed_jsonl
from uniretrieve.cli.app import app
from uniretrieve.search.query import QueryError, build_query, combine, parse_terms, read_query_file
from uniretrieve.search.searcher import ModelMismatchError, Searcher

runner = CliRunner()


@pytest.fixture(scope="module")
def query_encoder(tiny_model_dir: Path):
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(str(tiny_model_dir), device="cpu")


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    corpus = make_mixed_jsonl(root / "corpus")
    shards = root / "shards"
    res = runner.invoke(
        app,
        [
            "encode",
            str(corpus),
            "-o",
            str(shards),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["index", "build", str(shards), "--out", str(root / "idx"), "--cpu"])
    assert res.exit_code == 0, res.output
    return {"root": root, "corpus": corpus, "shards": shards, "idx": root / "idx", "model": tiny_model_dir}


def test_text_query_json_matches_the_encoder(built, query_encoder) -> None:
    res = runner.invoke(app, ["search", "a yellow star", "--index", str(built["idx"]), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    (obj,) = jsonl(res.output)
    assert obj["query"] == "a yellow star" and len(obj["hits"]) == 3
    assert [h["rank"] for h in obj["hits"]] == [1, 2, 3]
    assert "time:" in res.output and "encode" in res.output and "search" in res.output
    # same ranking as encoding the query ourselves and scoring every shard row
    from uniretrieve.embed.reader import open_shards

    ss = open_shards(built["shards"])
    ((vecs, table),) = list(ss.iter_vector_blocks(100, columns=("id",)))
    q = query_encoder.encode_texts(["a yellow star"])[0]
    scores = vecs @ q
    best = np.argsort(-scores)[:3]
    assert [h["id"] for h in obj["hits"]] == [table.column("id")[int(i)].as_py() for i in best]
    np.testing.assert_allclose([h["score"] for h in obj["hits"]], scores[best], atol=2e-3)  # fp16 shards


def test_image_instruction_composed_and_weighted_queries(built) -> None:
    img = built["corpus"].parent / "pics" / "p0.png"
    idx = str(built["idx"])
    res = runner.invoke(
        app,
        [
            "search",
            "--image",
            str(img),
            "--index",
            idx,
            "-k",
            "2",
            "--json",
            "--instruction",
            "Find an image like this",
        ],
    )
    assert res.exit_code == 0, res.output
    hits = jsonl(res.output)[0]["hits"]
    assert len(hits) == 2
    res = runner.invoke(app, ["search", "two green triangles", "--image", str(img), "--index", idx, "--json"])
    assert res.exit_code == 0 and len(jsonl(res.output)[0]["hits"]) == 6
    res = runner.invoke(
        app,
        [
            "search",
            "2:a red circle",
            "+",
            str(img),
            "-",
            "fruit",
            "--index",
            idx,
            "--json",
            "--where",
            "modality = 'text'",
        ],
    )
    assert res.exit_code == 0, res.output
    hits = jsonl(res.output)[0]["hits"]
    assert hits and all(h["modality"] == "text" for h in hits) and len(hits) == 3
    res = runner.invoke(app, ["search", "a red circle", "--index", idx])  # the rich table
    assert res.exit_code == 0 and "rank" in res.output and "score" in res.output


def test_batch_queries_file(built, tmp_path: Path) -> None:
    img = built["corpus"].parent / "pics" / "p1.png"
    qf = tmp_path / "q.jsonl"
    qf.write_text(
        json.dumps({"id": "a", "text": "a yellow star"})
        + "\n\n"
        + json.dumps({"id": "b", "image": str(img), "instruction": "Find a caption"})
        + "\n"
        + json.dumps({"text": "triangles", "image": str(img)})
        + "\n"
    )
    res = runner.invoke(app, ["search", "--queries", str(qf), "--index", str(built["idx"]), "-k", "2"])
    assert res.exit_code == 0, res.output
    out = jsonl(res.output)
    assert [o.get("query_id") for o in out] == ["a", "b", None] and all(len(o["hits"]) == 2 for o in out)
    txt = tmp_path / "q.txt"
    txt.write_text("a yellow star\n\nthe quick brown fox\n")
    res = runner.invoke(app, ["search", "--queries", str(txt), "--index", str(built["idx"]), "-k", "1"])
    assert [o["query"] for o in jsonl(res.output)] == ["a yellow star", "the quick brown fox"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    res = runner.invoke(app, ["search", "--queries", str(bad), "--index", str(built["idx"])])
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output


def test_other_model_is_refused_unless_forced(built, tiny_checkpoints) -> None:
    other = tiny_checkpoints("qwen2_vl")
    idx = str(built["idx"])
    res = runner.invoke(app, ["search", "a star", "--index", idx, "--model", str(other)])
    assert res.exit_code == 2 and "different spaces" in res.output and "--force" in res.output
    from uniretrieve.models.encoder import Encoder

    enc = Encoder.from_pretrained(str(other), device="cpu")
    if enc.dim == Searcher.load(built["idx"]).meta.dim:
        res = runner.invoke(
            app, ["search", "a star", "--index", idx, "--model", str(other), "--force", "--json"]
        )
        assert res.exit_code == 0, res.output
    else:
        with pytest.raises(ModelMismatchError, match="cannot search this index"):
            Searcher.load(built["idx"], encoder=enc, force=True)


def test_missing_index_and_bad_where_are_clear(built, tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "x", "--index", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not an index directory" in res.output
    res = runner.invoke(app, ["search", "x", "--index", str(built["idx"]), "--where", "colour = 1"])
    assert res.exit_code == 2 and "unknown column 'colour'" in res.output


def test_parse_terms_and_combine(tmp_path: Path) -> None:
    img = tmp_path / "pool.jpg"
    make_image(1).save(img)
    terms = parse_terms(["2:golden retriever", "+", str(img), "-", "fruit"])
    assert [t.weight for t in terms] == [2.0, 1.0, -1.0]
    assert terms[0].item.text == "golden retriever" and terms[1].item.image == str(img)
    assert terms[2].item.text == "fruit"
    q = build_query(["a dog"], image=img, instruction="find")
    assert (
        len(q.terms) == 1
        and q.terms[0].item.modality == "image_text"
        and q.terms[0].item.instruction == "find"
    )
    with pytest.raises(QueryError, match="ends with an operator"):
        parse_terms(["a", "+"])
    with pytest.raises(QueryError, match="no such file"):
        parse_terms(["./missing.jpg"])
    e = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(combine(e[:2], [2.0, -1.0]), np.array([2, -1, 0]) / np.sqrt(5), atol=1e-6)
    with pytest.raises(QueryError, match="cancel"):
        combine(np.stack([e[0], e[0]]), [1.0, -1.0])
    with pytest.raises(QueryError, match="no such file"):
        read_query_file(tmp_path / "none.txt")
