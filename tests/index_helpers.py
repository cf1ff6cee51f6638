"""Helpers for the index/search tests: synthetic vectors and shard directories written without a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.embed.manifest import Manifest, ShardInfo, write_manifest
from uniretrieve.embed.schema import EmbeddingSpec, build_table, row_group_rows
from uniretrieve.embed.writer import shard_name, write_shard_file


def quiet(_message: str) -> None:
    """A build/add log callback that prints nothing."""


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def clustered_vectors(n: int, d: int, seed: int = 0, clusters: int = 40, rank: int = 8) -> np.ndarray:
    """Points around `clusters` centres in a `rank`-dim subspace plus small noise: low intrinsic dimension, like
    real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, rank)).astype(np.float32)
    z = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, rank)).astype(np.float32)
    proj = np.random.default_rng(1234).standard_normal((rank, d)).astype(np.float32)
    return unit(z @ proj + 0.05 * rng.standard_normal((n, d)).astype(np.float32))


def write_shard_dir(
    root: Path,
    vectors: np.ndarray,
    *,
    model_id: str = "test-model",
    weight_hash: str = "w0",
    shard_rows: int = 1000,
    id_prefix: str = "",
    columns: dict[str, list[Any]] | None = None,
    dtype: str = "float32",
) -> Path:
    """A shard directory (Parquet shards + manifest.json) holding `vectors`, written the way the encoder writes."""
    root.mkdir(parents=True, exist_ok=True)
    spec = EmbeddingSpec(
        dim=vectors.shape[1],
        dtype=dtype,
        model_id=model_id,
        weight_hash=weight_hash,
        family="llava",
        prompt_regime="e5v",
    )
    man = Manifest.new(spec, model={"model_id": model_id, "weight_hash": weight_hash})
    n = len(vectors)
    for k, s in enumerate(range(0, n, shard_rows)):
        e = min(n, s + shard_rows)
        cols: dict[str, Any] = {"id": [f"{id_prefix}{i}" for i in range(s, e)], "embedding": vectors[s:e]}
        for name, values in (columns or {}).items():
            cols[name] = values[s:e]
        name = shard_name(k)
        digest, size = write_shard_file(root / name, build_table(spec, cols), row_group_rows(spec.dim, dtype))
        man.add_shard(
            ShardInfo(path=name, rows=e - s, input_start=s, input_end=e, sha256=digest, number=k, bytes=size)
        )
    man.complete = True
    write_manifest(root, man)
    return root


def to_flat_layout(out: Path) -> None:
    """Rewrite a one-version index the way the previous release laid it out (files in the index directory)."""
    import json
    import shutil

    import pyarrow.parquet as pq

    from uniretrieve.index.store import version_dir

    v = version_dir(out)
    for name in ("index.faiss", "idmap.parquet", "index.json"):
        shutil.move(v / name, out / name)
    shutil.rmtree(v)
    (out / "CURRENT").unlink()
    meta = json.loads((out / "index.json").read_text())
    del meta["deleted"]
    (out / "index.json").write_text(json.dumps({**meta, "format_version": 1}))
    pq.write_table(pq.read_table(out / "idmap.parquet").drop(["deleted"]), out / "idmap.parquet")
