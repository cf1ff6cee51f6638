"""`uniretrieve index add`: append new shards to an existing index (its training is reused), extending the id map.

Vectors from another model, weights, prompt regime or dim would land in the same space by accident only, so any
difference in the embedding settings is refused with the differing fields named.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from uniretrieve.index.build import Log, _write_index, add_blocks, tune_to_target, tuning_queries
from uniretrieve.index.idmap import IDMAP_NAME, IdMapWriter
from uniretrieve.index.meta import INDEX_NAME, BuildConfig, IndexMeta, IndexMetaError, read_meta, write_meta
from uniretrieve.index.source import VectorSource


class IndexMismatchError(IndexMetaError):
    """New vectors that do not belong in this index (other model or dim)."""


def check_same_space(meta: IndexMeta, settings: dict[str, Any], dim: int, *, where: str) -> None:
    """Refuse vectors whose dim or embedding settings differ from the index's."""
    if dim != meta.dim:
        raise IndexMismatchError(
            f"{where} holds {dim}-d vectors but the index holds {meta.dim}-d vectors; "
            f"build a separate index for them"
        )
    keys = sorted(set(meta.model) | set(settings))
    diff = [
        f"{k}: {meta.model.get(k)!r} (index) vs {settings.get(k)!r} (new)"
        for k in keys
        if meta.model.get(k) != settings.get(k)
    ]
    if diff:
        raise IndexMismatchError(
            f"{where} was embedded with other settings than the index:\n  "
            + "\n  ".join(diff)
            + "\nEncode it with the index's model, or build a separate index."
        )


def add_to_index(
    index_dir: str | Path,
    source: VectorSource,
    *,
    all_vectors: VectorSource | None = None,
    source_info: dict[str, Any] | None = None,
    log: Log = print,
) -> IndexMeta:
    """Append `source` to the index in `index_dir`. Returns the updated meta.

    all_vectors: every vector the index holds after the add, in internal-id order (the old shards, then the new);
    when given, the search parameter is re-tuned to the recorded target on held-out vectors of it, since more
    vectors per IVF list or HNSW layer lower recall at a fixed nprobe/efSearch. Without it the recorded recall is
    marked stale.
    """
    import faiss

    out = Path(index_dir)
    meta = read_meta(out)
    check_same_space(
        meta,
        source.spec_settings,
        source.dim,
        where=str(source_info.get("dirs") if source_info else "the new vectors"),
    )
    config = BuildConfig.from_dict(meta.config)
    t0 = time.perf_counter()
    index = faiss.read_index(str(out / INDEX_NAME))
    first = int(index.ntotal)
    if first != meta.num_vectors:
        raise IndexMetaError(
            f"{out / INDEX_NAME} holds {first} vectors but index.json says {meta.num_vectors}; "
            f"rebuild the index"
        )
    idmap = IdMapWriter(out / IDMAP_NAME, start=first, previous=out / IDMAP_NAME)
    t_add = add_blocks(index, source, idmap, config, log=log)
    if all_vectors is not None:
        if all_vectors.num_rows != index.ntotal:
            raise IndexMetaError(
                f"re-tuning needs all {index.ntotal} vectors of the index, got {all_vectors.num_rows}"
            )
        tq = tuning_queries(all_vectors, config, None)
        result = tune_to_target(index, meta.type, tq, config, nlist=meta.choice.get("nlist", 0), log=log)
        meta.tuning, meta.search_params = (
            result.to_dict(),
            {**meta.choice.get("params", {}), **result.search_params()},
        )
    else:
        meta.tuning = {
            **meta.tuning,
            "stale": True,
            "note": "measured before `index add`; rebuild or re-tune for a current figure",
        }
    _write_index(index, out / INDEX_NAME)
    idmap.close()
    meta.num_vectors = int(index.ntotal)
    meta.sources.append(
        {
            **(source_info or {}),
            "manifest_hash": source.fingerprint,
            "rows": source.num_rows,
            "first_id": first,
        }
    )
    meta.build_seconds[f"add_{len(meta.sources) - 1}"] = round(time.perf_counter() - t0, 3)
    write_meta(out, meta)
    log(f"added {source.num_rows} vectors to {out} (now {meta.num_vectors}; add took {t_add:.1f} s)")
    return meta
