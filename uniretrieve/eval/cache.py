"""Embedding cache for evaluation: one encode-shard directory per (model, benchmark part, list of sources).

Each entry is a directory `<cache>/<model>/<label>-<settings hash>/` holding `shard-00000.parquet` (the
`embed/schema.py` shard schema: id, embedding, modality, text, source) and `manifest.json`, so an entry is an
ordinary shard directory that `index`/`search` can read too. The settings hash covers the model (weights, family,
prompt regime, chat wrapper, token limit) and the fingerprint of the ordered sources, so a changed model, prompt or
dataset never reuses stale vectors. Vectors are stored as float32: scores, and so metrics, are then identical
between a fresh and a cached run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.eval.sources import Source, fingerprint

SHARD_NAME = "shard-00000.parquet"


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
        if d is None or not (d / SHARD_NAME).is_file():
            return None
        import pyarrow.parquet as pq

        from uniretrieve.embed.manifest import ManifestError, read_manifest
        from uniretrieve.embed.schema import arrow_to_vectors

        spec = self.spec(label, sources)
        try:
            man = read_manifest(d)
        except ManifestError:
            return None
        if man is None or not man.complete or man.settings_hash() != spec.settings_hash():
            return None
        table = pq.read_table(d / SHARD_NAME, columns=["id", "embedding"])
        if table.num_rows != len(sources) or table.column("id").to_pylist() != [
            source_id(s) for s in sources
        ]:
            return None
        return arrow_to_vectors(table.column("embedding"), spec.dim)

    def save(self, label: str, sources: Sequence[Source], vectors: np.ndarray) -> Path | None:
        """Write an entry atomically (built in a temporary sibling directory, then renamed into place)."""
        d = self.entry_dir(label, sources)
        if d is None:
            return None
        import pyarrow.parquet as pq

        from uniretrieve.embed.manifest import Manifest, SegmentInfo, ShardInfo, utc_now, write_manifest
        from uniretrieve.embed.schema import build_table

        spec = self.spec(label, sources)
        n = len(sources)
        table = build_table(
            spec,
            {
                "id": [source_id(s) for s in sources],
                "embedding": np.asarray(vectors, dtype=np.float32),
                "modality": [_modality(s) for s in sources],
                "text": [s.text for s in sources],
                "source": [s.image_path or s.origin for s in sources],
            },
        )
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{d.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shard = tmp / SHARD_NAME
        with open(shard, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        digest = hashlib.sha256(shard.read_bytes()).hexdigest()
        man = Manifest.new(spec, model=self.model, input={"eval_label": label, "rows": n})
        man.add_shard(
            ShardInfo(
                SHARD_NAME, rows=n, input_start=0, input_end=n, sha256=digest, bytes=shard.stat().st_size
            )
        )
        fp = spec.extra["sources_fingerprint"]
        man.segments = [
            SegmentInfo(
                0, utc_now(), n, fp, shard_base=0, chunks=1, shard_rows=n, done_chunks=[0], complete=True
            )
        ]
        man.complete = True
        write_manifest(tmp, man)
        if d.exists():  # a stale or concurrent entry with the same hash holds the same vectors; replace it
            shutil.rmtree(d)
        os.replace(tmp, d)
        return d


def _modality(s: Source) -> str:
    if not s.has_image:
        return "text"
    return "image" if s.text is None else "image_text"
