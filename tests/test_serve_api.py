"""The HTTP API through FastAPI's TestClient, on an index of a small image folder encoded by the tiny real model:
every endpoint, every error class and its one JSON shape, the key check, the path checks, the limits."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_image
from tests.serve_helpers import IMAGE_NAMES, build_flat, encode_folder, make_app, write_images

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_encoder) -> dict:
    root = tmp_path_factory.mktemp("serve")
    corpus = write_images(root / "corpus", IMAGE_NAMES)
    (root / "outside.png").write_bytes((corpus / "top.png").read_bytes())
    shards = encode_folder(corpus, root / "shards", tiny_model_dir, tiny_encoder)
    index = build_flat(shards, root / "idx")
    return {"root": root, "corpus": corpus, "shards": shards, "index": index, "encoder": tiny_encoder}


@pytest.fixture(scope="module")
def client(served: dict):
    app = make_app(served["index"], served["encoder"], watch_interval=0)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(served: dict):
    app = make_app(served["index"], served["encoder"], api_key=KEY, watch_interval=0, max_k=20, max_batch=3)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def small(served: dict):
    """A server with tight limits: small bodies, small uploads, few pixels."""
    app = make_app(
        served["index"],
        served["encoder"],
        watch_interval=0,
        max_request_bytes=40_000,
        max_upload_bytes=20_000,
        max_image_pixels=100 * 100,
    )
    with TestClient(app) as c:
        yield c


def png_bytes(size: tuple[int, int] = (40, 30), seed: int = 5) -> bytes:
    buf = io.BytesIO()
    make_image(seed, size).save(buf, format="PNG")
    return buf.getvalue()


def assert_error(res, status: int) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and body["error"]["code"] == status, body
    msg = body["error"]["message"]
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# --- the endpoints -----------------------------------------------------------------------------------------------


def test_health_and_info(client) -> None:
    res = client.get("/health")
    assert res.status_code == 200 and res.json() == {"status": "ok", "version": "v-000001"}
    info = client.get("/info").json()
    assert info["dim"] == info["model"]["dim"] if "dim" in info["model"] else info["dim"] > 0
    assert info["index"]["size"] == len(IMAGE_NAMES) and info["index"]["version"] == "v-000001"
    assert info["index"]["type"] and info["index"]["metric"] == "ip"
    assert info["model"]["model_id"] and info["model"]["family"] == "llava"
    assert info["limits"]["max_k"] == 1000 and info["limits"]["max_batch"] == 64
    assert info["modalities"] == ["image"] and "width" in info["filter_columns"]
    assert isinstance(info["build"], dict)


def test_text_search_matches_the_searcher(client, served: dict) -> None:
    from uniretrieve.search.searcher import Searcher

    res = client.post("/search", json={"text": "a red circle", "k": 4})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["version"] == "v-000001" and set(body["latency_ms"]) == {"total", "encode", "search"}
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    with Searcher.load(served["index"], encoder=served["encoder"]) as s:
        (want,) = s.search(texts=["a red circle"], k=4)
    assert [h["internal_id"] for h in hits] == [w.internal_id for w in want]
    np.testing.assert_allclose([h["score"] for h in hits], [w.score for w in want], atol=1e-5)
    h = hits[0]
    assert set(h) == {
        "rank",
        "score",
        "internal_id",
        "id",
        "modality",
        "text",
        "metadata",
        "item_url",
        "image_url",
    }
    assert h["modality"] == "image" and h["item_url"] == f"/items/{h['internal_id']}"
    assert h["image_url"] == f"/items/{h['internal_id']}/image"


def test_image_search_base64_data_url_and_multipart_agree(client, served: dict) -> None:
    data = png_bytes()
    b64 = base64.b64encode(data).decode()
    a = client.post("/search", json={"image": b64, "k": 3}).json()["hits"]
    b = client.post("/search", json={"image": "data:image/png;base64," + b64, "k": 3}).json()["hits"]
    c = client.post("/search", files={"image": ("q.png", data, "image/png")}, data={"k": "3"})
    assert c.status_code == 200, c.text
    ids = [h["internal_id"] for h in a]
    assert len(ids) == 3 and ids == [h["internal_id"] for h in b] == [
        h["internal_id"] for h in c.json()["hits"]
    ]
    # an indexed image finds itself first
    path = served["corpus"] / client.get("/items/3").json()["id"]
    own = client.post("/search", files={"image": ("x.png", path.read_bytes(), "image/png")}, data={"k": "1"})
    assert own.json()["hits"][0]["internal_id"] == 3


def test_composed_instruction_and_weighted_queries(client, served: dict) -> None:
    from uniretrieve.search.query import Query, Term, parse_terms
    from uniretrieve.search.searcher import Searcher
    from uniretrieve.types import Item

    img = Image.open(io.BytesIO(png_bytes()))
    composed = client.post(
        "/search",
        files={"image": ("q.png", png_bytes(), "image/png")},
        data={"text": "make it red", "k": "3"},
    )
    assert composed.status_code == 200, composed.text
    weighted = client.post(
        "/search", json={"query": '"2:a red circle" - "blue"', "k": 3, "instruction": "Find it."}
    )
    assert weighted.status_code == 200, weighted.text
    with Searcher.load(served["index"], encoder=served["encoder"]) as s:
        q1 = Query([Term(1.0, Item(text="make it red", image=img.convert("RGB")))], "c")
        q2 = Query(parse_terms(["2:a red circle", "-", "blue"], instruction="Find it."), "w")
        want1, want2 = s.search(queries=[q1, q2], k=3)
    assert [h["internal_id"] for h in composed.json()["hits"]] == [w.internal_id for w in want1]
    assert [h["internal_id"] for h in weighted.json()["hits"]] == [w.internal_id for w in want2]


def test_where_filter(client) -> None:
    res = client.post("/search", json={"text": "shapes", "k": 10, "where": "source like 'a b/%'"})
    assert res.status_code == 200, res.text
    assert sorted(h["id"] for h in res.json()["hits"]) == ["a b/one.png", "a b/two.jpg"]
    msg = assert_error(client.post("/search", json={"text": "x", "where": "no_such_column = 1"}), 400)
    assert "no_such_column" in msg


def test_more_like_this_equals_searching_the_stored_vector(client, served: dict) -> None:
    from uniretrieve.embed.reader import open_shards
    from uniretrieve.search.searcher import Searcher

    ss = open_shards(served["shards"])
    with Searcher.load(served["index"]) as s:
        row = s.idmap.slice(2, 1).to_pylist()[0]
        ref = next(r for r in ss.shards if str(r.path.resolve()) == row["shard"])
        vec = ss.read_vectors([ref.start + row["row"]])
        (want,) = s.search_vectors(vec, k=5)
    got = client.post("/search", json={"like": 2, "k": 5}).json()["hits"]
    assert [h["internal_id"] for h in got] == [w.internal_id for w in want]
    assert got[0]["internal_id"] == 2
    np.testing.assert_allclose([h["score"] for h in got], [w.score for w in want], rtol=0, atol=1e-6)
    assert_error(client.post("/search", json={"like": 999}), 404)


def test_batch_search(client) -> None:
    res = client.post(
        "/search/batch",
        json={
            "queries": [
                {"text": "a red circle", "k": 2},
                {"like": 1, "k": 2},
                {"text": "x", "where": "bad ="},
            ]
        },
    )
    assert res.status_code == 200, res.text
    r = res.json()["results"]
    assert len(r[0]["hits"]) == 2 and r[1]["hits"][0]["internal_id"] == 1
    assert r[2]["error"]["code"] == 400
    single = client.post("/search", json={"text": "a red circle", "k": 2}).json()["hits"]
    assert [h["internal_id"] for h in r[0]["hits"]] == [h["internal_id"] for h in single]


def test_items_by_internal_id_and_by_id_round_trip(client) -> None:
    for iid in range(len(IMAGE_NAMES)):
        row = client.get(f"/items/{iid}").json()
        assert row["internal_id"] == iid and row["id"] in IMAGE_NAMES and "shard" not in row
        again = client.get("/items", params={"id": row["id"]}).json()  # ids with '/', spaces, unicode
        assert again["internal_id"] == iid
        raw = client.get("/items?id=" + quote(row["id"], safe="")).json()
        assert raw["internal_id"] == iid
    assert_error(client.get("/items", params={"id": "nope/none.png"}), 404)
    assert_error(client.get("/items/12345"), 404)
    assert_error(client.get("/items/-1"), 404)
    assert_error(client.get("/items/abc"), 422)


def test_thumbnails(client, served: dict) -> None:
    res = client.get("/items/0/image", params={"size": 16})
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(res.content))
    assert max(im.size) <= 16
    assert_error(client.get("/items/0/image", params={"size": 5}), 422)
    assert_error(client.get("/items/999/image"), 404)


# --- errors and limits -------------------------------------------------------------------------------------------


def test_bad_requests_are_one_json_sentence(client) -> None:
    assert_error(client.post("/search", json={}), 400)  # nothing to search for
    assert_error(client.post("/search", json={"text": "a", "like": 1}), 400)
    assert_error(client.post("/search", json={"text": "   "}), 400)
    assert_error(
        client.post("/search", content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert_error(client.post("/search", json={"text": "a", "k": "many"}), 422)
    assert_error(client.post("/search", json={"text": "a", "k": 0}), 422)
    assert_error(client.post("/search", json={"text": "a", "colour": "red"}), 422)
    assert_error(client.post("/search", json={"image": "%%% not base64"}), 400)
    assert_error(client.post("/search", json={"image": base64.b64encode(b"not an image").decode()}), 400)
    assert_error(client.post("/search", json={"query": '"unclosed'}), 400)
    assert_error(client.post("/search", json={"query": "a +"}), 400)
    assert_error(client.post("/search", json={"query": "a - a"}), 400)  # terms cancel out
    assert_error(client.post("/search", json={"like": 1, "instruction": "x"}), 400)
    assert_error(client.post("/search", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(client.post("/search/batch", json={"queries": []}), 400)
    assert_error(client.post("/search/batch", json={"nope": 1}), 422)
    assert_error(client.get("/no/such/endpoint"), 404)
    assert_error(client.delete("/search"), 405)


def test_query_terms_never_read_server_files(client, served: dict) -> None:
    """An image path in the weighted syntax would make the server read its own files: refused, even if it exists."""
    path = str(served["corpus"] / "top.png")
    msg = assert_error(client.post("/search", json={"query": f"{path} + a red circle"}), 400)
    assert "image field" in msg


def test_k_and_batch_limits(keyed) -> None:
    h = {"X-API-Key": KEY}
    assert_error(keyed.post("/search", json={"text": "a", "k": 21}, headers=h), 400)
    assert keyed.post("/search", json={"text": "a", "k": 20}, headers=h).status_code == 200
    assert_error(keyed.post("/search/batch", json={"queries": [{"text": "a"}] * 4}, headers=h), 413)


def test_size_and_pixel_limits(small) -> None:
    big = b"x" * 50_000
    assert_error(small.post("/search", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 5000

    assert_error(small.post("/search", content=chunks(), headers={"content-type": "application/json"}), 413)
    noisy = png_bytes((120, 80))  # ~29 KB of noise: over the 20 KB upload limit, under the body limit
    assert len(noisy) > 20_000
    assert_error(small.post("/search", files={"image": ("n.png", noisy, "image/png")}), 413)
    assert_error(small.post("/search", json={"image": base64.b64encode(noisy[:25_000]).decode()}), 413)
    # a decompression bomb: a few hundred bytes of PNG declaring 200 × 200 pixels, over the 100 × 100 cap
    buf = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buf, format="PNG")
    msg = assert_error(small.post("/search", files={"image": ("b.png", buf.getvalue(), "image/png")}), 413)
    assert "pixel" in msg
    ok = io.BytesIO()
    Image.new("RGB", (90, 90), (200, 0, 0)).save(ok, format="PNG")
    assert small.post("/search", files={"image": ("ok.png", ok.getvalue(), "image/png")}).status_code == 200


def test_api_key_on_every_endpoint_but_health(keyed) -> None:
    assert keyed.get("/health").status_code == 200
    for method, path, kw in [
        ("get", "/info", {}),
        ("post", "/search", {"json": {"text": "a"}}),
        ("post", "/search/batch", {"json": {"queries": [{"text": "a"}]}}),
        ("get", "/items/0", {}),
        ("get", "/items", {"params": {"id": "top.png"}}),
        ("get", "/items/0/image", {}),
    ]:
        call = getattr(keyed, method)
        assert_error(call(path, **kw), 401)
        assert_error(call(path, headers={"X-API-Key": "wrong"}, **kw), 401)
        assert_error(call(path, headers={"Authorization": f"Bearer {KEY}x"}, **kw), 401)
        assert call(path, headers={"X-API-Key": KEY}, **kw).status_code == 200, path
        assert call(path, headers={"Authorization": f"Bearer {KEY}"}, **kw).status_code == 200, path
    doc = keyed.get("/openapi.json")  # the documentation holds no index data
    assert (
        doc.status_code == 200
        and doc.json()["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    )
    assert "/search" in doc.json()["paths"] and "multipart/form-data" in str(doc.json()["paths"]["/search"])
    assert keyed.get("/docs").status_code == 200


def test_api_docs_work_offline(client) -> None:
    """/docs names only this server's copy of Swagger UI (no CDN: the page must work with no network)."""
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assets = [a for a in ("swagger-ui-bundle.js", "swagger-ui.css") if f"/docs-assets/{a}" in page.text]
    assert assets == ["swagger-ui-bundle.js", "swagger-ui.css"], page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in assets:
        res = client.get(f"/docs-assets/{asset}")
        assert res.status_code == 200 and len(res.content) > 10_000


def test_cors_is_off_unless_asked(client, served: dict) -> None:
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    res = client.options("/search", headers=pre)
    assert "access-control-allow-origin" not in res.headers
    res = client.post("/search", json={"text": "a"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in res.headers
    app = make_app(served["index"], served["encoder"], watch_interval=0, cors_origin="https://ok.example")
    with TestClient(app) as c:
        res = c.options("/search", headers={**pre, "Origin": "https://ok.example"})
        assert res.headers["access-control-allow-origin"] == "https://ok.example"
        res = c.options("/search", headers=pre)
        assert res.headers.get("access-control-allow-origin") != "https://evil.example"


def test_images_only_from_inside_the_corpus(served: dict, tmp_path: Path) -> None:
    from uniretrieve.serve.items import inside

    root = served["corpus"].resolve()
    assert inside(root, "a b/one.png") == root / "a b" / "one.png"
    assert inside(root, "../outside.png") is None
    assert inside(root, "a b/../../outside.png") is None
    assert inside(root, str(served["root"] / "outside.png")) is None  # absolute
    assert inside(root, "a b") is None  # a folder
    link = root / "c" / "escape.png"
    link.symlink_to(served["root"] / "outside.png")
    try:
        assert inside(root, "c/escape.png") is None
    finally:
        link.unlink()
    # and through the API: an indexed file replaced by a symlink leaving the corpus is not served
    app = make_app(served["index"], served["encoder"], watch_interval=0)
    with TestClient(app) as c:
        target = root / "z" / "last.jpg"
        iid = c.get("/items", params={"id": "z/last.jpg"}).json()["internal_id"]
        kept = tmp_path / "kept.jpg"
        os.replace(target, kept)
        try:
            target.symlink_to(served["root"] / "outside.png")
            assert_error(c.get(f"/items/{iid}/image"), 404)
            view = app.state.service.holder.current
            cell = view._cell  # a crafted id map: `..` is refused before any file access
            view._cell = lambda col, i: "../outside.png" if col == "source" else cell(col, i)
            assert_error(c.get(f"/items/{iid}/image"), 404)
            del view._cell
        finally:
            target.unlink(missing_ok=True)
            os.replace(kept, target)
        assert c.get(f"/items/{iid}/image").status_code == 200


def test_503_while_the_index_cannot_be_loaded(tmp_path: Path) -> None:
    from uniretrieve.serve.app import create_app
    from uniretrieve.serve.config import ServeConfig

    app = create_app(ServeConfig(index=str(tmp_path / "nothing"), watch_interval=0))
    with TestClient(app) as c:
        assert "cannot be loaded" in assert_error(c.post("/search", json={"text": "a"}), 503)
        assert_error(c.get("/health"), 503)
