"""`Source`: one thing a benchmark needs embedded, not yet opened, with a stable identity for caching."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from uniretrieve.types import Item


@dataclass(frozen=True)
class Source:
    """A text, an image (a file, or encoded bytes kept from a Parquet cell), or both.

    `origin` says where it came from ("test-00000.parquet row 17") so that a failing image can be named.
    `image_digest` identifies in-memory image bytes without hashing them again.
    """

    text: str | None = None
    image_path: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    image_digest: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        if self.image_path is not None and self.image_bytes is not None:
            raise ValueError(f"{self.origin}: a source has an image path or image bytes, not both")
        if self.image_bytes is not None and self.image_digest is None:
            object.__setattr__(self, "image_digest", digest_bytes(self.image_bytes))
        if self.text is None and not self.has_image:
            raise ValueError(f"{self.origin or 'a source'} has neither text nor image")

    @property
    def has_image(self) -> bool:
        return self.image_path is not None or self.image_bytes is not None

    def key(self) -> str:
        """Identity of what gets embedded: equal keys give equal embeddings."""
        img = (
            self.image_path
            if self.image_path is not None
            else (f"bytes:{self.image_digest}" if self.has_image else "")
        )
        return f"{self.text!r}\x1f{img}"

    def to_item(self) -> Item:
        """The Encoder's input. Image bytes are decoded here, so only the batch being encoded is held in memory."""
        if self.image_bytes is None:
            return Item(text=self.text, image=self.image_path)
        from uniretrieve.models.images import load_image_bytes

        return Item(text=self.text, image=load_image_bytes(self.image_bytes, self.origin))


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint(sources: Sequence[Source]) -> str:
    """Hash of the ordered source keys: a cached embedding file is valid only for the same list in the same order."""
    h = hashlib.blake2b(digest_size=16)
    for s in sources:
        h.update(s.key().encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


def dedupe(sources: Sequence[Source]) -> tuple[list[Source], list[int]]:
    """Unique sources in first-seen order, and for each input its index among them."""
    index: dict[str, int] = {}
    unique: list[Source] = []
    ids: list[int] = []
    for s in sources:
        k = s.key()
        if k not in index:
            index[k] = len(unique)
            unique.append(s)
        ids.append(index[k])
    return unique, ids
