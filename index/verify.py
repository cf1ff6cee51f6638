"""`uniretrieve index verify`: is an index directory sound? One line per problem found, none when it is.

Checks the version pointer, that index.faiss, idmap.parquet and index.json agree (vector count, dim, ids in order,
deleted rows, no id live twice), that the hit store search answers from holds the id map's rows, and that the shard
directories the index was made from still hold what was indexed (their manifests' hash). Read-only: it takes no lock and deletes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.index.idmap import IDMAP_NAME, IdMapError, deleted_mask, read_idmap
from uniretrieve.index.meta import INDEX_NAME, META_NAME, IndexMetaError, read_meta
from uniretrieve.index.ondisk import read_version_index
from uniretrieve.index.store import POINTER_NAME, current_version, has_index, version_folders


@dataclass
class Report:
    root: Path
    version: str = ""
    vectors: int = 0
    live: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_index(root: str | Path) -> Report:

    root = Path(root)
    rep = Report(root)
    if not has_index(root):
        rep.problems.append(f"{root}: no {POINTER_NAME} or {META_NAME}; not an index directory")
        return rep
    try:
        v = current_version(root)
    except IndexMetaError as exc:
        rep.problems.append(str(exc))
        return rep
    rep.version = v.path.name if v.number else "flat layout (version 0)"
    if not v.path.is_dir():
        rep.problems.append(f"{root / POINTER_NAME} names {v.path.name}, which does not exist")
        return rep
    try:
        meta = read_meta(v.path)
    except IndexMetaError as exc:
        rep.problems.append(str(exc))
        return rep
    try:
        index = read_version_index(v.path)  # an on-disk index: every list part must open
    except (RuntimeError, IndexMetaError) as exc:
        rep.problems.append(f"{v.path / INDEX_NAME}: unreadable ({str(exc).splitlines()[-1]})")
        index = None
    try:
        idmap = read_idmap(v.path / IDMAP_NAME)
    except (OSError, IdMapError, ValueError) as exc:
        rep.problems.append(f"{v.path / IDMAP_NAME}: {exc}")
        idmap = None
    if index is not None:
        rep.vectors = int(index.ntotal)
        if index.ntotal != meta.num_vectors:
            rep.problems.append(
                f"{INDEX_NAME} holds {index.ntotal} vectors, {META_NAME} says {meta.num_vectors}"
            )
        if index.d != meta.dim:
            rep.problems.append(f"{INDEX_NAME} holds {index.d}-d vectors, {META_NAME} says {meta.dim}")
    if idmap is not None:
        if len(idmap) != meta.num_vectors:
            rep.problems.append(f"{IDMAP_NAME} has {len(idmap)} rows, {META_NAME} says {meta.num_vectors}")
        dead = deleted_mask(idmap)
        rep.live = int((~dead).sum())
        if int(dead.sum()) != meta.deleted:
            rep.problems.append(
                f"{IDMAP_NAME} marks {int(dead.sum())} rows deleted, {META_NAME} says {meta.deleted}"
            )
        ids = idmap.column("id").filter(~dead).to_pylist()
        twice = [i for i, n in Counter(ids).items() if n > 1]
        if twice:
            rep.problems.append(
                f"{len(twice)} id(s) are live more than once, e.g. {twice[0]!r}; rebuild the index"
            )
        _check_hit_store(v.path, idmap, rep)
    _check_sources(meta.sources, rep)
    older = [p.name for p in version_folders(root) if p != v.path]
    if older:
        rep.notes.append(
            f"{len(older)} other version folder(s) ({', '.join(older)}): held by readers, or left for "
            "the next `index add` to remove"
        )
    if sum(int(s.get("rows", 0)) for s in meta.sources) != meta.num_vectors:
        rep.problems.append(f"{META_NAME}: the sources' rows do not add up to {meta.num_vectors} vectors")
    return rep


def _check_hit_store(version: Path, idmap: Any, rep: Report) -> None:
    """The hit store (what search answers from) must hold the id map's hit columns, row for row."""
    from uniretrieve.index.hitstore import HITS_DIR, HitStore, HitStoreError

    try:
        store = HitStore.open(version)
    except HitStoreError as exc:
        rep.problems.append(str(exc))
        return
    if store is None:
        rep.notes.append(
            f"{version.name} has no {HITS_DIR}/ (written by an older release): searches read the id map"
        )
        return
    expected = HitStore.from_table(idmap)
    if store.rows != expected.rows or store.hit_columns != expected.hit_columns:
        rep.problems.append(f"{version / HITS_DIR} does not match {IDMAP_NAME}; rebuild the index")
        return
    every = np.arange(store.rows)
    names = store.hit_columns
    same_dead = np.array_equal(
        np.zeros(store.rows, bool) if store.deleted is None else np.asarray(store.deleted),
        np.zeros(store.rows, bool) if expected.deleted is None else expected.deleted,
    )
    if not same_dead or store.take(every, names).to_pylist() != expected.take(every, names).to_pylist():
        rep.problems.append(f"{version / HITS_DIR} does not match {IDMAP_NAME}; rebuild the index")


def _check_sources(sources: list[dict], rep: Report) -> None:
    """Each recorded shard set still holds what was indexed: its manifests hash as recorded. A set added again
    later (a re-encoded corpus) is checked at its latest add only."""
    from uniretrieve.embed.manifest import ManifestError, read_manifest
    from uniretrieve.index.source import manifests_hash

    later: set[str] = set()
    for k in reversed(range(len(sources))):
        s = sources[k]
        dirs = [Path(d) for d in s.get("dirs", [])]
        superseded = set(map(str, dirs)) <= later
        later |= set(map(str, dirs))
        if not dirs or superseded:
            continue
        missing = [str(d) for d in dirs if not (d / "manifest.json").exists()]
        if missing:
            rep.notes.append(f"source {k}: {', '.join(missing)} not present; its vectors cannot be checked")
            continue
        try:
            got = manifests_hash([read_manifest(d) for d in dirs])
        except ManifestError as exc:
            rep.problems.append(f"source {k}: {exc}")
            continue
        if got != s.get("manifest_hash"):
            rep.problems.append(
                f"source {k}: {', '.join(map(str, dirs))} changed since it was indexed (manifest hash {got}, "
                f"recorded {s.get('manifest_hash')}); `uniretrieve index add` it again to update the index"
            )
