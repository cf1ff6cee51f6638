"""Live updates: `index add` on a served index is swapped in while requests keep coming; no request fails, each
answer comes from exactly one version, the new rows become visible, and old versions are released after their last
request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serve_helpers import IMAGE_NAMES, add_shards, build_flat, encode_folder, make_app, write_images

ADDS = 3


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_encoder) -> dict:
    root = tmp_path_factory.mktemp("live")
    corpus = write_images(root / "corpus", IMAGE_NAMES)
    shards = encode_folder(corpus, root / "shards", tiny_model_dir, tiny_encoder)
    more = []
    for n in range(ADDS):
        folder = write_images(root / f"more{n}", [f"new{n}/a.png", f"new{n}/b.png"], seed=100 + 10 * n)
        more.append(encode_folder(folder, root / f"more{n}-shards", tiny_model_dir, tiny_encoder))
    return {"root": root, "shards": shards, "more": more}


def test_holder_closes_a_swapped_version_after_its_last_request(
    dirs: dict, tiny_encoder, tmp_path: Path
) -> None:
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.serve.config import ServeConfig
    from uniretrieve.serve.state import IndexHolder

    index = build_flat(dirs["shards"], tmp_path / "idx")
    holder = IndexHolder(
        ServeConfig(index=str(index), watch_interval=0), Searcher.load(index, encoder=tiny_encoder)
    )
    try:
        with holder.lease() as old:
            add_shards(index, dirs["more"][0])
            assert holder.refresh() and holder.current is not old
            assert old.retired and old.searcher.version._fd is not None  # still held: a request is using it
            assert holder.current.searcher.encoder is tiny_encoder  # no model reload
        assert old.searcher.version._fd is None  # released with its last request
        assert not holder.refresh()  # nothing new
    finally:
        holder.close()


def test_live_swap_under_concurrent_requests(dirs: dict, tiny_encoder, tmp_path: Path) -> None:
    from uniretrieve.search.searcher import Searcher

    index = build_flat(dirs["shards"], tmp_path / "idx")
    expected: dict[str, tuple[int, list[int]]] = {}  # version → (size, ids of `like 0`)

    def record() -> str:
        with Searcher.load(index) as s:
            name = f"v-{s.version.version.number:06d}"
            (hits,) = s.search_vectors(s.cpu_index.reconstruct_n(0, 1), k=5)
            expected[name] = (s.meta.num_vectors, [h.internal_id for h in hits])
        return name

    record()
    app = make_app(index, tiny_encoder, watch_interval=0.05)
    answers: list[tuple[str, dict]] = []
    failures: list[str] = []
    stop = threading.Event()

    with TestClient(app) as c:

        def client(n: int) -> None:
            bodies = [{"like": 0, "k": 5}, {"text": f"a shape {n}", "k": 5}]
            i = 0
            while not stop.is_set():
                body = bodies[i % 2]
                i += 1
                res = c.post("/search", json=body)
                if res.status_code != 200:
                    failures.append(f"{res.status_code} {res.text}")
                    continue
                answers.append(("like" if "like" in body else "text", res.json()))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            for shards in dirs["more"]:
                add_shards(index, shards)
                name = record()
                deadline = time.monotonic() + 20
                while c.get("/health").json()["version"] != name:
                    assert time.monotonic() < deadline, f"{name} was never swapped in"
                    time.sleep(0.02)
                time.sleep(0.1)  # requests on the new version
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        seen = {body["version"] for _, body in answers}
        assert len(seen) >= 2 and seen <= set(expected)
        for kind, body in answers:
            size, like_ids = expected[body["version"]]
            ids = [h["internal_id"] for h in body["hits"]]
            assert all(0 <= i < size for i in ids)
            if kind == "like":
                assert ids == like_ids, body["version"]
        # the rows of the last add are served
        last = c.get("/items", params={"id": f"new{ADDS - 1}/b.png"})
        assert last.status_code == 200, last.text
        iid = last.json()["internal_id"]
        assert c.post("/search", json={"like": iid, "k": 1}).json()["hits"][0]["internal_id"] == iid
        assert app.state.service.holder.swaps == ADDS
    # every version but the current one was released, so the next writer could delete it
    folders = sorted(p.name for p in index.iterdir() if p.name.startswith("v-"))
    assert folders[-1] == max(expected) and len(folders) <= 2, folders


def test_a_replaced_item_points_to_its_new_row(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    """Re-encoding a changed image and adding the shard folder again replaces its row: the old internal id answers
    404 (naming the way to the new one), the id finds the new row, and search never returns the old one."""
    from tests.conftest import make_image

    corpus = write_images(tmp_path / "corpus", IMAGE_NAMES)
    shards = encode_folder(corpus, tmp_path / "shards", tiny_model_dir, tiny_encoder)
    index = build_flat(shards, tmp_path / "idx")
    app = make_app(index, tiny_encoder, watch_interval=0.05)
    with TestClient(app) as c:
        old = c.get("/items", params={"id": "top.png"}).json()["internal_id"]
        make_image(999, (50, 50)).save(corpus / "top.png")
        encode_folder(corpus, shards, tiny_model_dir, tiny_encoder)
        add_shards(index, shards)
        deadline = time.monotonic() + 20
        while c.get("/health").json()["version"] == "v-000001":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        res = c.get(f"/items/{old}")
        assert res.status_code == 404 and "/items?id=" in res.json()["error"]["message"]
        assert c.post("/search", json={"like": old}).status_code == 404
        new = c.get("/items", params={"id": "top.png"}).json()["internal_id"]
        assert new != old
        hits = c.post("/search", json={"text": "anything", "k": 100}).json()["hits"]
        assert old not in {h["internal_id"] for h in hits} and new in {h["internal_id"] for h in hits}
        assert c.post("/search", json={"like": new, "k": 1}).json()["hits"][0]["internal_id"] == new


def test_serving_an_on_disk_index_and_its_live_add(dirs: dict, tiny_encoder, tmp_path: Path) -> None:
    """`serve` over an on-disk IVF index: memory-mapped lists answer text and "more like this" queries, and an
    `index add` (a new hard-linked part) is swapped in without a restart."""
    from tests.index_helpers import quiet
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ShardSource

    index = tmp_path / "idx"
    config = BuildConfig(index_type="ivf", nlist=2, on_disk=True, gpu=False)
    build_index(ShardSource([dirs["shards"]]), index, config, log=quiet)
    app = make_app(index, tiny_encoder, watch_interval=0.05)
    with TestClient(app) as c:
        assert c.get("/info").status_code == 200
        before = c.get("/health").json()["version"]
        res = c.post("/search", json={"text": "a shape", "k": 3})
        assert res.status_code == 200 and len(res.json()["hits"]) == 3
        like = c.post("/search", json={"like": 0, "k": 1}).json()["hits"]
        assert like[0]["internal_id"] == 0  # its stored vector finds itself (its own list is probed first)
        add_shards(index, dirs["more"][0])
        deadline = time.monotonic() + 20
        while c.get("/health").json()["version"] == before:
            assert time.monotonic() < deadline, "the add was never swapped in"
            time.sleep(0.02)
        new = c.get("/items", params={"id": "new0/b.png"})
        assert new.status_code == 200, new.text
        iid = new.json()["internal_id"]
        assert c.post("/search", json={"like": iid, "k": 1}).json()["hits"][0]["internal_id"] == iid
