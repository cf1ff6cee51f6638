"""What a loader hands to the runner: the sources to embed per benchmark, with the ground truth as indices.

Loaders (`datasets_*.py`) read public layouts into these records; the runner embeds their sources and feeds the
vectors and indices to `metrics.py`. No record holds an opened image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uniretrieve.eval.sources import Source


class MissingDataError(FileNotFoundError):
    """A benchmark file or folder is not where the loader looked; the message says what to download and where."""


def require(path: object, what: str, how: str) -> None:
    """Raise `MissingDataError` naming `path`, what it should be and how to get it, unless it exists."""
    from pathlib import Path

    if not Path(str(path)).exists():
        raise MissingDataError(f"{what} not found: {path}\n{how}")


@dataclass
class RetrievalSet:
    """Captioned images: texts[t] describes images[text_to_image[t]] (Flickr30K, COCO, ShareGPT4V, Urban1K)."""

    name: str
    images: list[Source]
    texts: list[Source]
    text_to_image: np.ndarray
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.text_to_image = np.asarray(self.text_to_image, dtype=np.int64)
        if self.text_to_image.shape != (len(self.texts),):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {self.text_to_image.shape} image ids")
        if not self.images or not self.texts:
            raise ValueError(f"{self.name}: no images or no captions were read")


@dataclass
class SugarCrepeSet:
    """One SugarCrepe category: image i with its positive caption pos[i] and its negative caption neg[i]."""

    name: str
    images: list[Source]
    positives: list[Source]
    negatives: list[Source]

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.positives) == len(self.negatives)):
            raise ValueError(f"{self.name}: images, positives and negatives differ in length")
        if not self.images:
            raise ValueError(f"{self.name}: no items")


@dataclass
class MMEBSet:
    """One MMEB dataset, deduplicated: row r's query is queries[query_index[r]]; its candidates are
    candidates[candidate_index[r]], target first."""

    name: str
    queries: list[Source]
    candidates: list[Source]
    query_index: np.ndarray
    candidate_index: list[np.ndarray]
    n_rows: int = 0
    n_candidate_refs: int = 0
    """Candidate references over all rows before deduplication (what VLM2Vec-style code would look up)."""

    def __post_init__(self) -> None:
        self.query_index = np.asarray(self.query_index, dtype=np.int64)
        if len(self.query_index) != len(self.candidate_index):
            raise ValueError(
                f"{self.name}: {len(self.query_index)} queries but {len(self.candidate_index)} rows"
            )
        self.n_rows = len(self.query_index)
        if self.n_rows == 0:
            raise ValueError(f"{self.name}: no rows")
