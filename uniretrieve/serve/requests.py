"""Search request bodies → what to search with: a query to encode (text, image, both, or the CLI's weighted syntax)
or a stored item vector (`like`), plus k and the `where` filter. JSON bodies and multipart forms give the same."""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uniretrieve.serve.config import ServeConfig
from uniretrieve.serve.errors import ApiError, validation_message

FIELDS = ("text", "image", "instruction", "query", "like", "k", "where")


class SearchBody(BaseModel):
    """One search. Give exactly one of `text`, `image`, `query`, `like` — or `text` and `image` together (one
    composed text+image query)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="A text query.")
    image: str | None = Field(
        None, description="A query image: base64 bytes or a data: URL (multipart: an uploaded file)."
    )
    instruction: str | None = Field(None, description="Task instruction applied to the query items.")
    query: str | None = Field(
        None,
        description="The CLI's weighted/composed syntax over texts, e.g. '\"2:golden retriever\" - fruit'.",
    )
    like: int | None = Field(
        None, description="Internal id of an item: search with its stored vector (more like this)."
    )
    k: int = Field(10, description="Hits to return (at most the server's max_k).")
    where: str | None = Field(
        None, description="Filter in the CLI's --where language, e.g. \"modality = 'image' and width > 512\"."
    )


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[dict[str, Any]] = Field(..., description="Search bodies, as POST /search takes them.")


@dataclass
class SearchSpec:
    """A parsed search: exactly one of `query` (to encode), `image_bytes` (+ optional text: decoded, then encoded)
    or `like` (a stored vector)."""

    k: int
    where: str | None
    query: Any = None
    like: int | None = None
    text: str | None = None
    instruction: str | None = None
    image_bytes: bytes | None = None


def parse_body(data: dict[str, Any], cfg: ServeConfig) -> SearchSpec:
    try:
        body = SearchBody.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc.errors())) from None
    return spec_of(body, None, cfg)


def parse_json_bytes(raw: bytes, cfg: ServeConfig) -> SearchSpec:
    if not raw.strip():
        raise ApiError(400, 'the request has no body; send a JSON object such as {"text": "a red car"}')
    try:
        body = SearchBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            raise ApiError(400, "the request body is not valid JSON") from None
        raise ApiError(422, validation_message(errors)) from None
    return spec_of(body, None, cfg)


def spec_of(body: SearchBody, upload: bytes | None, cfg: ServeConfig) -> SearchSpec:
    """Check the combination and limits of a body's fields; decode a base64 image's bytes (not its pixels)."""
    image = upload if upload is not None else _base64_image(body.image, cfg) if body.image else None
    given = [
        name
        for name, v in (("text", body.text), ("query", body.query), ("like", body.like), ("image", image))
        if v is not None
    ]
    if not given:
        raise ApiError(400, "nothing to search for: give text, image, query or like")
    if len(given) > 1 and set(given) != {"text", "image"}:
        raise ApiError(
            400,
            f"give only one of text, image, query, like (text and image together make one query); got {', '.join(given)}",
        )
    if body.k < 1:
        raise ApiError(422, f"k must be at least 1, got {body.k}")
    if body.k > cfg.max_k:
        raise ApiError(400, f"k {body.k} is over this server's limit of {cfg.max_k} (--max-k)")
    where = body.where if body.where and body.where.strip() else None
    spec = SearchSpec(k=body.k, where=where, instruction=body.instruction or None)
    if body.like is not None:
        if body.instruction:
            raise ApiError(400, "instruction has no effect with like (the stored vector is used as it is)")
        spec.like = body.like
    elif image is not None:
        spec.image_bytes, spec.text = image, body.text
    elif body.query is not None:
        spec.query = weighted_query(body.query, spec.instruction)
    else:
        assert body.text is not None
        if not body.text.strip():
            raise ApiError(400, "text is empty")
        spec.text = body.text
        spec.query = text_query(body.text, spec.instruction)
    return spec


def text_query(text: str | None, instruction: str | None, image: Any = None) -> Any:
    from uniretrieve.search.query import Query, Term
    from uniretrieve.types import Item

    return Query([Term(1.0, Item(text=text, image=image, instruction=instruction))], text or "image")


def weighted_query(text: str, instruction: str | None) -> Any:
    """The CLI's weighted syntax (search/query.py) over texts. Image terms would name files on the server, so
    they are refused: send the image itself in `image`."""
    from uniretrieve.search.query import IMAGE_SUFFIXES, Query, QueryError, parse_terms

    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ApiError(400, f"query {text!r}: {exc}") from None
    for tok in tokens:
        if Path(tok).suffix.lower() in IMAGE_SUFFIXES:
            raise ApiError(
                400,
                f"query term {tok!r} names an image file; the server reads no files for queries, so send the "
                "image in the image field",
            )
    try:
        terms = parse_terms(tokens, instruction=instruction)
    except QueryError as exc:
        raise ApiError(400, str(exc)) from None
    if not terms:
        raise ApiError(400, "query is empty")
    return Query(terms, text)


def _base64_image(value: str, cfg: ServeConfig) -> bytes:
    data = value.strip()
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, "image: a data: URL must be base64 (data:image/png;base64,...)")
    if len(data) * 3 // 4 > cfg.max_upload_bytes + 3:
        raise ApiError(413, f"image is over this server's limit of {cfg.max_upload_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image is not valid base64") from None
    if not raw:
        raise ApiError(400, "image is empty")
    return raw


def decode_image(data: bytes, cfg: ServeConfig) -> Any:
    """The query image as RGB pixels, under the pixel cap (a decompression bomb is refused from its header)."""
    from uniretrieve.models.images import ImageLoadError, load_image_bytes

    try:
        return load_image_bytes(data, "the query image", limit=cfg.max_image_pixels)
    except ImageLoadError as exc:
        status = 413 if "pixel cap" in exc.reason else 400
        raise ApiError(status, f"the query image cannot be used: {exc.reason}") from None


async def parse_form(request: Any, cfg: ServeConfig) -> SearchSpec:
    """A multipart/form-data (or urlencoded) search: the same fields, `image` as an uploaded file."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS) + 1, max_part_size=cfg.max_upload_bytes)
    except ApiError:
        raise
    except Exception as exc:  # starlette's MultiPartException, malformed bodies
        raise ApiError(400, f"the form cannot be read: {exc}") from None
    values: dict[str, Any] = {}
    upload: bytes | None = None
    try:
        for name, value in form.multi_items():
            if name not in FIELDS:
                raise ApiError(422, f"{name}: unknown field; fields are {', '.join(FIELDS)}")
            if isinstance(value, UploadFile):
                if name != "image":
                    raise ApiError(422, f"{name}: a file was sent; only image takes one")
                upload = await value.read(cfg.max_upload_bytes + 1)
                if len(upload) > cfg.max_upload_bytes:
                    raise ApiError(413, f"image is over this server's limit of {cfg.max_upload_bytes} bytes")
                if not upload:
                    raise ApiError(400, "image is an empty file")
            elif value != "" or name == "text":
                values[name] = value
    finally:
        await form.close()
    try:
        body = SearchBody.model_validate(values)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc.errors())) from None
    return spec_of(body, upload, cfg)


def image_of(spec: SearchSpec, cfg: ServeConfig) -> Any:
    """Decode the spec's image and make its query (run in a worker thread: decoding is CPU work)."""
    assert spec.image_bytes is not None
    im = decode_image(spec.image_bytes, cfg)
    return text_query(spec.text or None, spec.instruction, image=im) if spec.text else _image_query(im, spec)


def _image_query(im: Any, spec: SearchSpec) -> Any:
    from uniretrieve.search.query import Query, Term
    from uniretrieve.types import Item

    return Query([Term(1.0, Item(image=im, instruction=spec.instruction))], "image")
