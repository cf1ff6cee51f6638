"""Micro-batching is an optimisation only: concurrent mixed queries encoded together give the vectors (and the hits)
that encoding them one at a time gives."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_image
from tests.serve_helpers import IMAGE_NAMES, build_flat, encode_folder, make_app, write_images


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_encoder) -> Path:
    root = tmp_path_factory.mktemp("batching")
    corpus = write_images(root / "corpus", IMAGE_NAMES)
    return build_flat(encode_folder(corpus, root / "shards", tiny_model_dir, tiny_encoder), root / "idx")


def mixed_queries() -> list:
    from uniretrieve.search.query import Query, Term, parse_terms
    from uniretrieve.types import Item

    texts = ["a red circle", "two blue squares above a green star", "x", "a yellow triangle on the left"]
    qs = [Query([Term(1.0, Item(text=t))], t) for t in texts]
    qs += [Query([Term(1.0, Item(image=make_image(i, (30 + 7 * i, 40))))], f"im{i}") for i in range(3)]
    qs.append(Query([Term(1.0, Item(text="make it red", image=make_image(9)))], "composed"))
    qs.append(Query(parse_terms(["2:a red circle", "-", "blue"], instruction="Find it."), "weighted"))
    qs.append(Query([Term(1.0, Item(text="a cat", instruction="Retrieve the image."))], "instructed"))
    return qs


def test_batched_vectors_equal_one_at_a_time(index: Path, tiny_encoder) -> None:
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.batcher import MicroBatcher

    qs = mixed_queries()
    with Searcher.load(index, encoder=tiny_encoder) as s:
        want = np.stack([s.encode([q])[0] for q in qs])
        batcher = MicroBatcher(wait_ms=200, max_items=64)

        async def all_at_once() -> list[np.ndarray]:
            return await asyncio.gather(*(batcher.encode(s, q) for q in qs))

        try:
            got = np.stack(asyncio.run(all_at_once()))
        finally:
            batcher.close()
    assert batcher.batches < len(qs)  # they really shared forward passes
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_a_failing_query_fails_alone(index: Path, tiny_encoder) -> None:
    from uniretrieve.search.query import Query, QueryError, Term
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.batcher import MicroBatcher
    from uniretrieve.types import Item

    cancel = Query([Term(1.0, Item(text="a")), Term(-1.0, Item(text="a"))], "zero")
    good = Query([Term(1.0, Item(text="a red circle"))], "good")
    with Searcher.load(index, encoder=tiny_encoder) as s:
        batcher = MicroBatcher(wait_ms=200, max_items=64)

        async def both() -> list:
            return await asyncio.gather(
                batcher.encode(s, good), batcher.encode(s, cancel), return_exceptions=True
            )

        try:
            ok, bad = asyncio.run(both())
        finally:
            batcher.close()
        assert isinstance(bad, QueryError)
        np.testing.assert_allclose(ok, s.encode([good])[0], atol=2e-5)


def test_concurrent_requests_get_the_hits_of_single_requests(index: Path, tiny_encoder) -> None:
    buf = io.BytesIO()
    make_image(3, (44, 30)).save(buf, format="PNG")
    bodies = [
        {"text": t, "k": 4} for t in ("a red circle", "blue squares", "a star", "green", "shapes", "x y z")
    ]
    bodies += [{"query": '"2:a red circle" - blue', "k": 4}, {"like": 2, "k": 4}]
    solo_app = make_app(index, tiny_encoder, watch_interval=0, micro_batch=False)
    with TestClient(solo_app) as c:
        want = [c.post("/search", json=b).json()["hits"] for b in bodies]
    app = make_app(index, tiny_encoder, watch_interval=0, batch_wait_ms=20)
    with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: c.post("/search", json=b).json()["hits"], bodies * 3))
        assert app.state.service.batcher.batches < len(got)
    for i, hits in enumerate(got):
        ref = want[i % len(bodies)]
        assert [h["internal_id"] for h in hits] == [h["internal_id"] for h in ref], bodies[i % len(bodies)]
        np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in ref], atol=2e-5)
