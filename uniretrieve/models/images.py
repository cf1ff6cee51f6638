"""Opening images: bounded memory, EXIF orientation applied, converted to RGB, fully decoded, failures named.

Every image the project decodes comes through here (files, Parquet bytes, opened PIL images). The header is read
first: an image over the pixel cap is refused before any pixel is decoded, so a tiny hostile file (a 17 KB PNG of
12000×12000) cannot take gigabytes. Images under the cap but far larger than any model input are decoded at a
reduced scale (JPEG `draft`) and reduced right after decoding (`Image.reduce`): the processor resizes to the
model's few hundred pixels anyway, and the copies made afterwards (orientation, RGB) stay small.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from uniretrieve.types import ImageLike

MAX_PIXELS_ENV = "UNIRETRIEVE_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000
"""Images with more pixels are refused (skipped and recorded by encode); `UNIRETRIEVE_MAX_IMAGE_PIXELS` overrides
it (the environment reaches DataLoader workers too)."""
KEEP_PIXELS = 6_000_000
"""Large images are decoded/reduced by the largest integer factor that keeps at least this many pixels: more than
any supported processor takes in (LLaVA-OneVision's largest anyres grid, 2304², is 5.3 Mpx), so only detail the
model would never see is dropped."""


class ImageLoadError(ValueError):
    """An image that cannot be used. `path` names it; `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def max_pixels() -> int:
    """The pixel cap: `UNIRETRIEVE_MAX_IMAGE_PIXELS` if set, else `DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive pixel count, got {raw!r}")
    return value


def load_image(image: ImageLike, *, limit: int | None = None) -> Image.Image:
    """Return an RGB PIL image with EXIF orientation applied.

    Paths are decoded completely here (`load()`), so a truncated file fails now, naming its path, rather than
    deep inside a processor. Animated formats give their first frame. limit: the pixel cap (default `max_pixels()`).
    """
    if isinstance(image, Image.Image):
        return _decode(image, str(getattr(image, "filename", "") or "in-memory image"), limit)
    path = Path(image)
    if not path.exists():
        raise ImageLoadError(str(path), "no such file")
    if path.is_dir():
        raise ImageLoadError(str(path), "is a directory")
    if path.stat().st_size == 0:
        raise ImageLoadError(str(path), "empty file (0 bytes)")
    return _open(path, str(path), limit)


def load_image_bytes(data: bytes, name: str, *, limit: int | None = None) -> Image.Image:
    """`load_image` for encoded bytes (a Parquet cell); `name` says where they came from."""
    return _open(io.BytesIO(data), name or "in-memory image", limit)


def _open(fp: Path | io.BytesIO, name: str, limit: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our cap decides, with a reason
            with Image.open(fp) as im:
                im.seek(0)
                return _decode(im, name, limit)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:  # over PIL's own hard limit (~179 Mpx), refused by Image.open
        raise ImageLoadError(name, f"over the pixel cap: {exc}") from exc
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise ImageLoadError(name, f"{type(exc).__name__}: {exc}") from exc


def _decode(im: Image.Image, name: str, limit: int | None) -> Image.Image:
    """Check the size from the header, decode (at a reduced scale where possible), orient, convert."""
    cap = max_pixels() if limit is None else limit
    w, h = im.size
    if w * h > cap:
        raise ImageLoadError(
            name,
            f"{w}×{h} is {w * h / 1e6:.1f} Mpx, over the pixel cap of {cap / 1e6:.1f} Mpx; shrink the image or "
            f"raise {MAX_PIXELS_ENV}",
        )
    factor = _reduce_factor(w, h)
    if factor > 1 and im.format == "JPEG":
        im.draft("RGB", (w // factor, h // factor))  # decodes at 1/2, 1/4 or 1/8 scale: less memory and time
    im.load()
    factor = _reduce_factor(*im.size)
    if factor > 1:
        im = (im if im.mode == "RGB" else im.convert("RGB")).reduce(factor)
    return _normalise(im)


def _reduce_factor(w: int, h: int) -> int:
    return max(1, math.isqrt(w * h // KEEP_PIXELS))


def _normalise(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB") if im.mode != "RGB" else im.copy()
