"""`uniretrieve index add`: append new shards to an existing index (its training is reused), extending the id map,
as a new version of the index that replaces the old one in one step (index/store.py).

Vectors from another model, weights, prompt regime or dim would land in the same space by accident only, so any
difference in the embedding settings is refused with the differing fields named.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.build import Log, _write_index, add_blocks, tune_to_target, tuning_queries
from uniretrieve.index.idmap import IDMAP_NAME, IdMapWriter, read_idmap
from uniretrieve.index.meta import INDEX_NAME, BuildConfig, IndexMeta, IndexMetaError, read_meta, write_meta
from uniretrieve.index.ondisk import is_on_disk, read_version_index
from uniretrieve.index.ondisk_build import PartAppender
from uniretrieve.index.source import VectorSource
from uniretrieve.index.store import has_index, writing
from uniretrieve.index.update import plan_add


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
    """Add `source` to the index in `index_dir` as a new version (index/store.py). Returns the updated meta.

    A shard set already added is a no-op; rows already present are skipped, changed rows replace their old
    version, ids taken by another corpus refuse the add (index/update.py). all_vectors: every vector the index
    holds after the add, in internal-id order (the old shards, then the new); when given and the add only appends,
    the search parameter is re-tuned to the recorded target on held-out vectors of it, since more vectors per IVF
    list or HNSW layer lower recall at a fixed nprobe/efSearch. Otherwise the recorded recall is marked stale.
    """
    if not has_index(index_dir):
        read_meta(Path(index_dir))  # raises the "not an index directory" error (before creating a lock file)
    with writing(index_dir) as w:  # one writer at a time; readers keep the old version until the switch
        assert w.base is not None
        done = _add(w.base.path, w.new_folder, source, all_vectors, source_info, log)
        if done is None:
            return read_meta(w.base.path)
        meta, folder = done
        w.commit(folder)
    replaced = f", {meta.deleted} replaced rows skipped by search" if meta.deleted else ""
    log(
        f"added {meta.sources[-1]['rows']} vectors to {index_dir} (now {meta.num_vectors}{replaced}; "
        f"version {folder.name})"
    )
    return meta


def _add(
    base: Path,
    new_folder: Callable[[], Path],
    source: VectorSource,
    all_vectors: VectorSource | None,
    source_info: dict[str, Any] | None,
    log: Log,
) -> tuple[IndexMeta, Path] | None:
    """Write base + source into a new version folder; None when there is nothing to add."""
    meta = read_meta(base)
    where = ", ".join(map(str, source_info.get("dirs", []))) if source_info else "the new vectors"
    check_same_space(meta, source.spec_settings, source.dim, where=where or "the new vectors")
    if any(s.get("manifest_hash") == source.fingerprint for s in meta.sources):
        log(f"{where} is already in the index (same shard manifests); nothing to add")
        return None
    config = BuildConfig.from_dict(meta.config)
    t0 = time.perf_counter()
    on_disk = is_on_disk(base)
    index = read_version_index(base)
    first = int(index.ntotal)
    if first != meta.num_vectors:
        raise IndexMetaError(
            f"{base / INDEX_NAME} holds {first} vectors but index.json says {meta.num_vectors}; "
            f"rebuild the index"
        )
    old = read_idmap(base / IDMAP_NAME)
    plan = plan_add(old, source, config.block_rows)
    if plan.updated:
        shown = ", ".join(map(repr, plan.updated[:5])) + (" ..." if len(plan.updated) > 5 else "")
        log(f"updating {len(plan.updated)} row(s) whose content changed: {shown}")
    if plan.skipped:
        log(f"skipping {plan.skipped} row(s) already in the index (same id and content hash)")
    if not plan.added:
        log(f"every row of {where} is already in the index; nothing to add")
        return None
    out = new_folder()
    idmap = IdMapWriter(out / IDMAP_NAME, start=first, previous=old, delete=plan.replace)
    if on_disk:  # the new vectors become one more list part; the older parts are linked, not copied
        appender = PartAppender(base, first)
        add_blocks(appender, source, idmap, config, log=log, keep=plan.keep)
        try:
            index = appender.finish(out, log)
        except BaseException:
            idmap.abort()
            raise
    else:
        add_blocks(
            index, source, idmap, config, log=log, keep=plan.keep
        )  # drops the partial id map on failure
    appended_all = plan.added == source.num_rows and not len(plan.replace) and not meta.deleted
    if all_vectors is not None and appended_all and all_vectors.num_rows == index.ntotal:
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
    if not on_disk:
        _write_index(index, out / INDEX_NAME)
    idmap.close()
    meta.num_vectors = int(index.ntotal)
    meta.deleted += len(np.unique(plan.replace))
    entry = {
        **(source_info or {}),
        "manifest_hash": source.fingerprint,
        "rows": plan.added,
        "first_id": first,
    }
    if plan.skipped or plan.updated:
        entry.update(skipped=plan.skipped, updated=len(plan.updated))
    meta.sources.append(entry)
    meta.build_seconds[f"add_{len(meta.sources) - 1}"] = round(time.perf_counter() - t0, 3)
    write_meta(out, meta)
    return meta, out
