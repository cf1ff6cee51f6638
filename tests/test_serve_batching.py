"""Micro-batching is an optimisation only: concurrent mixed queries encoded together give the vectors (and the hits)
that encoding them one at a time gives, with one encoder thread or several sharing the model."""

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


def scores_of(hits: list) -> dict[int, float]:
    return {iid: score for iid, score in hits}


@pytest.mark.parametrize("workers", [1, 3])
def test_batched_answers_equal_one_at_a_time(index: Path, tiny_encoder, workers: int) -> None:
    """Every item's score (k = all) for each of the mixed queries, encoded and searched together vs alone."""
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.batcher import MicroBatcher
    from uniretrieve.serve.state import Served

    qs = mixed_queries()
    n = len(IMAGE_NAMES)
    with Searcher.load(index, encoder=tiny_encoder) as s:
        want = [[(h.internal_id, h.score) for h in s.search(queries=[q], k=n)[0]] for q in qs]
        served = Served(s)
        batcher = MicroBatcher(
            lambda h, _v: (h.internal_id, h.score), wait_ms=200, max_items=64, encoder_workers=workers
        )

        async def all_at_once() -> list:
            return await asyncio.gather(*(batcher.search(served, k=n, where=None, query=q) for q in qs))

        try:
            got = asyncio.run(all_at_once())
        finally:
            batcher.close()
    assert batcher.batches < len(qs) and batcher.searches < len(qs)  # they really shared passes and searches
    for g, w in zip(got, want, strict=True):
        assert len(g.hits) == n and g.encode_s >= 0 and g.search_s >= 0
        gs, ws = scores_of(g.hits), scores_of(w)
        assert gs.keys() == ws.keys()
        np.testing.assert_allclose([gs[i] for i in ws], list(ws.values()), atol=2e-5)


def test_a_failing_query_fails_alone(index: Path, tiny_encoder) -> None:
    from uniretrieve.search.query import Query, QueryError, Term
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.batcher import MicroBatcher
    from uniretrieve.serve.state import Served
    from uniretrieve.types import Item

    cancel = Query([Term(1.0, Item(text="a")), Term(-1.0, Item(text="a"))], "zero")
    good = Query([Term(1.0, Item(text="a red circle"))], "good")
    with Searcher.load(index, encoder=tiny_encoder) as s:
        served = Served(s)
        batcher = MicroBatcher(lambda h, _v: (h.internal_id, h.score), wait_ms=200, max_items=64)

        async def both() -> list:
            return await asyncio.gather(
                batcher.search(served, k=3, where=None, query=good),
                batcher.search(served, k=3, where=None, query=cancel),
                batcher.search(served, k=3, where="bad =", query=good),
                return_exceptions=True,
            )

        try:
            ok, bad, bad_filter = asyncio.run(both())
        finally:
            batcher.close()
        assert isinstance(bad, QueryError) and isinstance(bad_filter, ValueError)
        (want,) = s.search(queries=[good], k=3)
        assert [i for i, _ in ok.hits] == [h.internal_id for h in want]


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_get_the_hits_of_single_requests(index: Path, tiny_encoder, workers: int) -> None:
    buf = io.BytesIO()
    make_image(3, (44, 30)).save(buf, format="PNG")
    bodies = [
        {"text": t, "k": 4} for t in ("a red circle", "blue squares", "a star", "green", "shapes", "x y z")
    ]
    bodies += [{"query": '"2:a red circle" - blue', "k": 4}, {"like": 2, "k": 4}]
    solo_app = make_app(index, tiny_encoder, watch_interval=0, micro_batch=False)
    with TestClient(solo_app) as c:
        want = [c.post("/search", json=b).json()["hits"] for b in bodies]
        every = [c.post("/search", json={**b, "k": len(IMAGE_NAMES)}).json()["hits"] for b in bodies]
    app = make_app(index, tiny_encoder, watch_interval=0, batch_wait_ms=20, model_workers=workers)
    with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: c.post("/search", json=b).json()["hits"], bodies * 3))
        assert app.state.service.batcher.batches < len(got)
    for i, hits in enumerate(got):
        ref, solo = want[i % len(bodies)], {h["internal_id"]: h["score"] for h in every[i % len(bodies)]}
        # Same top-k scores, and each hit is that item with its solo score: two items whose scores tie within
        # float noise (batched GEMMs round differently) may trade places, nothing else may.
        np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in ref], atol=2e-5)
        np.testing.assert_allclose(
            [h["score"] for h in hits], [solo[h["internal_id"]] for h in hits], atol=2e-5
        )
        assert len({h["internal_id"] for h in hits}) == len(ref), bodies[i % len(bodies)]


def test_close_answers_what_was_queued_and_stops_every_thread(index: Path, tiny_encoder) -> None:
    """Queries queued before `close` are all answered (the search thread stops only after every encoder thread)."""
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.batcher import MicroBatcher
    from uniretrieve.serve.state import Served

    qs = mixed_queries()
    with Searcher.load(index, encoder=tiny_encoder) as s:
        served = Served(s)
        batcher = MicroBatcher(lambda h, _v: h.internal_id, wait_ms=50, max_items=2, encoder_workers=2)

        async def queue_then_close() -> list:
            pending = [asyncio.ensure_future(batcher.search(served, k=2, where=None, query=q)) for q in qs]
            await asyncio.sleep(0)  # every job is queued
            await asyncio.get_running_loop().run_in_executor(None, batcher.close)
            return await asyncio.gather(*pending)

        got = asyncio.run(queue_then_close())
    assert [len(a.hits) for a in got] == [2] * len(qs)
    assert not any(t.is_alive() for t in [*batcher._encoders, batcher._search_thread])
    with pytest.raises(ValueError, match="encoder_workers"):
        MicroBatcher(lambda h, _v: h, encoder_workers=0)
