"""Embedding cache for evaluation: one encode-shard directory per (model, benchmark part, list of sources).

Each entry is a directory `<cache>/<model>/<label>-<settings hash>/` written by the encode pipeline's shard writer
(`embed/commit.py` `append_shards`: one shard in the `embed/schema.py` schema — id, embedding, modality, text,
source — and `manifest.json`), so an entry is an ordinary shard directory that `open_shards`, `index` and `search`
read too. The settings hash covers the model (weights, family, prompt regime, chat wrapper, token limit) and the
fingerprint of the ordered sources, so a changed model, prompt or dataset never reuses stale vectors. Vectors are
stored as float32: scores, and so metrics, are then identical between a fresh and a cached run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.eval.sources import Source, fingerprint
from uniretrieve.io import atomic_dir


def _slug(s: str) -> str:
    s = s.rstrip("/").split("/")[-1] if "/" in s else s
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:80] or "model"


def source_id(s: Source) -> str:
    """Stable row id: a short hash of what is embedded."""
    return hashlib.blake2b(s.key().encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class EmbeddingCache:
    """Load or store the vectors of a list of sources for one model. `root=None` disables caching."""

    def __init__(self, root: str | Path | None, model: dict[str, Any]) -> None:
        self.root = Path(root) if root is not None else None
        self.model = dict(model)

    def spec(self, label: str, sources: Sequence[Source]) -> Any:
        from uniretrieve.embed.schema import EmbeddingSpec

        m = self.model
        return EmbeddingSpec(
            dim=int(m["dim"]),
            dtype="float32",
            model_id=str(m.get("model_id", "")),
            weight_hash=str(m.get("weight_hash", "")),
            family=str(m.get("family", "")),
            prompt_regime=str(m.get("prompt_regime", "")),
            instruction=None,
            normalized=True,
            extra={
                "eval_label": label,
                "sources_fingerprint": fingerprint(sources),
                "rows": len(sources),
                "adapter": m.get("adapter"),
                "chat_wrapper": m.get("chat_wrapper"),
                "max_text_tokens": m.get("max_text_tokens"),
                "pooling": m.get("pooling"),
            },
        )

    def entry_dir(self, label: str, sources: Sequence[Source]) -> Path | None:
        if self.root is None:
            return None
        h = self.spec(label, sources).settings_hash()
        return self.root / _slug(str(self.model.get("model_id", "model"))) / f"{_slug(label)}-{h}"

    def load(self, label: str, sources: Sequence[Source]) -> np.ndarray | None:
        """Cached vectors `[N, D]` for exactly these sources, or None (absent, incomplete or not matching)."""
        d = self.entry_dir(label, sources)
        if d is None or not d.is_dir():
            return None
        from uniretrieve.embed.manifest import ManifestError
        from uniretrieve.embed.reader import open_shards

        try:
            ss = open_shards(d)
            if not ss.complete or ss.manifest.settings_hash() != self.spec(label, sources).settings_hash():
                return None
            vectors, table = ss.read_all(columns=("id",))
        except ManifestError:
            return None
        if table.column("id").to_pylist() != [source_id(s) for s in sources]:
            return None
        return vectors

    def save(self, label: str, sources: Sequence[Source], vectors: np.ndarray) -> Path | None:
        """Write an entry atomically: one shard written like `uniretrieve encode`'s, in a temp directory that then
        replaces the entry (a concurrent writer of the same entry holds the same vectors)."""
        d = self.entry_dir(label, sources)
        if d is None:
            return None
        from uniretrieve.embed.commit import append_shards

        block = {
            "id": [source_id(s) for s in sources],
            "embedding": np.asarray(vectors, dtype=np.float32),
            "modality": [_modality(s) for s in sources],
            "text": [s.text for s in sources],
            "source": [s.image_path or s.origin for s in sources],
        }
        with atomic_dir(d, per_writer=True) as tmp:
            append_shards(
                tmp,
                self.spec(label, sources),
                [block],
                chunks=1,
                shard_rows=len(sources),
                model=self.model,
                input={"eval_label": label, "rows": len(sources)},
            )
        return d


def _modality(s: Source) -> str:
    if not s.has_image:
        return "text"
    return "image" if s.text is None else "image_text"
