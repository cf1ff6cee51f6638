"""The FastAPI app: `create_app(config, searcher=None)`. Endpoints and their JSON shapes: docs/serving.md#api.

The event loop only parses, routes and answers: query encoding runs in the micro-batcher's thread
(serve/batcher.py), image decoding, FAISS searches and thumbnails in the thread pool. Every request leases one index
version for its whole life (serve/state.py), so a live swap never mixes two versions in one answer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from uniretrieve._version import __version__
from uniretrieve.serve.batcher import MicroBatcher
from uniretrieve.serve.config import ServeConfig
from uniretrieve.serve.errors import ApiError, install_handlers
from uniretrieve.serve.guard import Guard
from uniretrieve.serve.requests import (
    BatchBody,
    SearchBody,
    SearchSpec,
    image_of,
    parse_body,
    parse_form,
    parse_json_bytes,
)
from uniretrieve.serve.state import IndexHolder, Served

STATIC = Path(__file__).parent / "static"


def _search_errors() -> tuple[type[BaseException], ...]:
    from uniretrieve.models.images import ImageLoadError
    from uniretrieve.search.filters import FilterError
    from uniretrieve.search.query import QueryError

    return (FilterError, QueryError, ImageLoadError)


def hit_json(hit: Any, view: Served) -> dict[str, Any]:
    iid = int(hit.internal_id)
    return {
        "rank": hit.rank,
        "score": hit.score,
        "internal_id": iid,
        "id": hit.id,
        "modality": hit.modality,
        "text": hit.text,
        "metadata": hit.metadata,
        "item_url": f"/items/{iid}",
        "image_url": view.image_url(iid),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Service:
    """What the routes share: the config, the served index versions, the encoder's batcher."""

    def __init__(self, cfg: ServeConfig, searcher: Any) -> None:
        self.cfg = cfg
        self.holder = IndexHolder(cfg, searcher)
        self.batcher = MicroBatcher(
            hit_json,
            wait_ms=cfg.batch_wait_ms,
            max_items=cfg.max_batch_size,
            enabled=cfg.micro_batch,
            encoder_workers=cfg.model_workers,
        )
        self.errors = _search_errors()

    async def run(self, spec: SearchSpec, served: Served) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Hits (JSON) of one parsed search on the leased version, and where the time went."""
        try:
            if spec.like is not None:
                t0 = time.perf_counter()
                vector = await run_in_threadpool(served.stored_vector, spec.like)
                answer = await self.batcher.search(served, k=spec.k, where=spec.where, vector=vector)
                answer.encode_s = time.perf_counter() - t0 - answer.search_s  # reading the stored vector
            else:
                query = spec.query
                if spec.image_bytes is not None:
                    query = await run_in_threadpool(image_of, spec, self.cfg)
                answer = await self.batcher.search(served, k=spec.k, where=spec.where, query=query)
        except self.errors as exc:
            raise ApiError(400, str(exc)) from None
        return answer.hits, {"encode": ms(answer.encode_s), "search": ms(answer.search_s)}


def warm_up(searcher: Any) -> None:
    """Text and image queries through the encoder and the index before the first request: torch's first calls
    (and the image processor's) are far slower than the rest, and a compiled model compiles on them. The batches
    are the kinds a server meets: padded texts, one image, one text."""
    from PIL import Image

    from uniretrieve.serve.requests import text_query

    image = Image.new("RGB", (32, 32), (128, 128, 128))
    queries = [text_query("warm-up", None), text_query("a longer warm-up query", None)]
    vectors = searcher.encode([*queries, text_query(None, None, image=image)])
    searcher.encode(queries[:1])
    searcher.search_vectors(vectors, k=1)


def create_app(config: ServeConfig, *, searcher: Any = None) -> FastAPI:
    """The service over `config.index` (or over `searcher`, an open Searcher whose encoder is loaded or loadable).

    The index watcher runs while the app's lifespan does (uvicorn, or `with TestClient(app)`)."""
    svc = Service(config, searcher)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.holder.start_watching()
        try:
            yield
        finally:
            svc.batcher.close()
            svc.holder.close()

    app = FastAPI(
        title="uniretrieve",
        version=__version__,
        description="Search a uniretrieve index: texts, images, composed and weighted queries, filters.",
        lifespan=lifespan,
        docs_url=None,  # our own /docs below: FastAPI's loads Swagger UI from a CDN, blank offline
    )
    app.state.service = svc
    install_handlers(app)
    app.add_middleware(Guard, api_key=config.api_key, max_body=config.max_request_bytes)  # type: ignore[arg-type]
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,  # type: ignore[arg-type]
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    _routes(app, svc)
    if config.api_key:
        _document_the_key(app)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """/docs from the swagger-ui-bundle package's copy of Swagger UI (the serve extra), so the API docs work with
    no network; without that package, FastAPI's page (Swagger UI from its CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    kwargs: dict[str, str] = {}
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        kwargs = {
            "swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
            "swagger_css_url": "/docs-assets/swagger-ui.css",
            "swagger_favicon_url": "/docs-assets/favicon-32x32.png",
        }

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="uniretrieve API", **kwargs
        )


SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SearchBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    **SearchBody.model_json_schema(),
                    "properties": {
                        **SearchBody.model_json_schema()["properties"],
                        "image": {"type": "string", "format": "binary", "description": "A query image file."},
                    },
                }
            },
        },
    }
}


def _routes(app: FastAPI, svc: Service) -> None:
    cfg = svc.cfg
    holder = svc.holder

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            raise ApiError(404, "this installation has no web page")
        return FileResponse(index)

    @app.get("/health", summary="Liveness and the served index version (no API key needed).")
    async def health() -> JSONResponse:
        with holder.lease() as served:
            return JSONResponse({"status": "ok", "version": served.version})

    @app.get("/info", summary="Model, index, build settings and limits.")
    async def info() -> JSONResponse:
        with holder.lease() as served:
            s = served.searcher
            meta = s.meta
            return JSONResponse(
                {
                    "model": meta.model,
                    "dim": meta.dim,
                    "index": {
                        "type": meta.type,
                        "factory": meta.factory,
                        "size": meta.num_vectors,
                        "live": int(served.live.sum()),
                        "metric": meta.metric,
                        "search_params": meta.search_params,
                        "version": served.version,
                    },
                    "build": meta.config,
                    "limits": {
                        "max_k": cfg.max_k,
                        "max_batch": cfg.max_batch,
                        "max_request_bytes": cfg.max_request_bytes,
                        "max_upload_bytes": cfg.max_upload_bytes,
                        "max_image_pixels": _pixel_cap(cfg),
                    },
                    "serving": {
                        "micro_batch": cfg.micro_batch,
                        "batch_wait_ms": cfg.batch_wait_ms,
                        "max_batch_size": cfg.max_batch_size,
                        "model_workers": cfg.model_workers,
                        "compiled": cfg.compile,
                        "uniretrieve": __version__,
                    },
                    "modalities": served.modalities,
                    "filter_columns": s.filter_columns,
                }
            )

    @app.post(
        "/search",
        summary="Search with a text, an image, both, a weighted query or an item's vector.",
        openapi_extra=SEARCH_BODY,
    )
    async def search(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            spec = await parse_form(request, cfg)
        elif ctype and not ctype.startswith("application/json"):
            raise ApiError(415, f"send JSON or multipart/form-data, not {ctype.split(';')[0]}")
        else:
            spec = parse_json_bytes(await request.body(), cfg)
        with holder.lease() as served:
            hits, lat = await svc.run(spec, served)
            return JSONResponse(
                {
                    "hits": hits,
                    "latency_ms": {"total": ms(time.perf_counter() - t0), **lat},
                    "version": served.version,
                }
            )

    @app.post("/search/batch", summary="Many searches in one request (encoded together).")
    async def search_batch(body: BatchBody) -> JSONResponse:
        import asyncio

        t0 = time.perf_counter()
        if len(body.queries) > cfg.max_batch:
            raise ApiError(
                413,
                f"{len(body.queries)} queries is over this server's limit of {cfg.max_batch} (--max-batch)",
            )
        if not body.queries:
            raise ApiError(400, "queries is empty")

        async def one(q: dict[str, Any], served: Served) -> dict[str, Any]:
            try:
                hits, _ = await svc.run(parse_body(q, cfg), served)
            except ApiError as exc:
                return exc.body()
            return {"hits": hits}

        with holder.lease() as served:
            results = await asyncio.gather(*(one(q, served) for q in body.queries))
            return JSONResponse(
                {
                    "results": results,
                    "latency_ms": {"total": ms(time.perf_counter() - t0)},
                    "version": served.version,
                }
            )

    @app.get("/items/{internal_id}", summary="One item's id-map row.")
    async def item(internal_id: int) -> JSONResponse:
        with holder.lease() as served:
            return JSONResponse({**served.row(internal_id), "version": served.version})

    @app.get("/items", summary="Look an item up by its id (any string: URL-encode it).")
    async def item_by_id(id: str = Query(..., description="The item's id.")) -> JSONResponse:
        with holder.lease() as served:
            iid = await run_in_threadpool(served.lookup, id)  # a scan of the id column
            return JSONResponse({**served.row(iid), "version": served.version})

    @app.get("/items/{internal_id}/image", summary="A thumbnail (JPEG) of the item's image.")
    async def item_image(
        internal_id: int, size: int = Query(256, description="Longest side in pixels.")
    ) -> Response:
        if not 16 <= size <= cfg.thumbnail_max:
            raise ApiError(422, f"size must be between 16 and {cfg.thumbnail_max}, got {size}")
        with holder.lease() as served:
            data, mime = await run_in_threadpool(served.thumbnail, internal_id, size, cfg.max_image_pixels)
        return Response(
            data,
            media_type=mime,
            headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
        )


def _document_the_key(app: FastAPI) -> None:
    """Name the API key in the OpenAPI schema, so /docs offers "Authorize" and sends it with every call."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            doc.setdefault("components", {})["securitySchemes"] = {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            }
            doc["security"] = [{"ApiKey": []}]
            doc["paths"].get("/health", {}).get("get", {})["security"] = []
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _pixel_cap(cfg: ServeConfig) -> int:
    from uniretrieve.models.images import max_pixels

    return cfg.max_image_pixels or max_pixels()


__all__ = ["Service", "create_app", "hit_json"]
