"""What an index answers with, for the index writers' kill sweeps (the harness itself is tests/faults.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def snapshot(index_dir: Path) -> dict[str, Any]:
    """What an index answers with: ids, deleted marks and vectors in internal-id order, counts and sources."""
    import faiss
    import numpy as np

    from uniretrieve.index.idmap import deleted_mask, read_idmap
    from uniretrieve.index.meta import read_meta
    from uniretrieve.index.store import version_dir

    v = version_dir(index_dir)
    index = faiss.read_index(str(v / "index.faiss"))
    idmap = read_idmap(v / "idmap.parquet")
    meta = read_meta(index_dir)
    return {
        "ids": idmap.column("id").to_pylist(),
        "deleted": deleted_mask(idmap).tolist(),
        "vectors": np.asarray(index.reconstruct_n(0, index.ntotal)).tobytes(),
        "num_vectors": meta.num_vectors,
        "meta_deleted": meta.deleted,
        "sources": [(s["manifest_hash"], s["rows"], s["first_id"]) for s in meta.sources],
        "search_params": meta.search_params,
    }
