"""Records that cross module boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from PIL import Image

ImageLike = Union[str, Path, "Image.Image"]


@dataclass(frozen=True)
class Item:
    """One input to embed: a text, an image, or both, with an optional task instruction.

    `image` is a path or an already opened PIL image. At least one of `text` and `image` is set.
    """

    text: str | None = None
    image: ImageLike | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.image is None:
            raise ValueError("an Item needs a text, an image, or both")

    @property
    def modality(self) -> str:
        """'text', 'image' or 'image_text'."""
        if self.image is None:
            return "text"
        return "image" if self.text is None else "image_text"
