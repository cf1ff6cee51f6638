"""Opening images: EXIF orientation applied, converted to RGB, fully decoded, failures named."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from uniretrieve.types import ImageLike


class ImageLoadError(ValueError):
    """An image that cannot be used. `path` names it; `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def load_image(image: ImageLike) -> Image.Image:
    """Return an RGB PIL image with EXIF orientation applied.

    Paths are decoded completely here (`load()`), so a truncated file fails now, naming its path, rather than
    deep inside a processor. Animated formats give their first frame.
    """
    if isinstance(image, Image.Image):
        return _normalise(image)
    path = Path(image)
    if not path.exists():
        raise ImageLoadError(str(path), "no such file")
    if path.is_dir():
        raise ImageLoadError(str(path), "is a directory")
    if path.stat().st_size == 0:
        raise ImageLoadError(str(path), "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            return _normalise(im)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise ImageLoadError(str(path), f"{type(exc).__name__}: {exc}") from exc


def _normalise(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB") if im.mode != "RGB" else im.copy()
