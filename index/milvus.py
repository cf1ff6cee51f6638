"""Embedding shards → a Milvus collection (a server or cluster at `http://host:19530`, or milvus-lite for a path
ending in `.db`), keeping ids, vectors and every shard column exactly. The path and what only a cluster shows:
docs/milvus.md.

    export_to_milvus(["shards/"], "http://milvus:19530", "docs", MilvusConfig(index_type="HNSW"))
    write_import_files(["shards/"], "import/")   # Parquet for Milvus bulk import (cluster only)

pymilvus is imported only inside these functions, so the CLI stays fast and works without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from uniretrieve.config import opt
from uniretrieve.embed.schema import EMBEDDING, ID, OPTIONAL_COLUMNS
from uniretrieve.io import atomic_path

if TYPE_CHECKING:  # the CLI imports this module for MilvusConfig: the reader, parquet and compute load on use
    from uniretrieve.embed.reader import ShardSet

VARCHAR_MAX = 65535
"""Milvus's largest VARCHAR max_length (UTF-8 bytes). Only a bound: Milvus stores the actual length."""
MAX_BLOCK_ROWS = 16384
"""Milvus's query result window: the per-block query for rows already there must fit in it."""
LITE_BUILDS = ("AUTOINDEX", "FLAT", "BRUTE_FORCE", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")
"""Index types milvus-lite 3.2 builds. It accepts any other name (IVF_PQ, DISKANN, SCANN …, even a typo) and then
searches by brute force, so an export to a `.db` file refuses those rather than report an index that is not there."""
SCALARS = tuple(OPTIONAL_COLUMNS)
STRINGS = (ID, *(c for c, t in OPTIONAL_COLUMNS.items() if t == pa.string() and c != "metadata"))
PREFIX = "uniretrieve."
"""Collection properties holding the shards' settings: which model made the vectors (lite drops descriptions)."""
INSTALL = 'pymilvus is not installed; install it with: pip install "uniretrieve[milvus]"'


class MilvusExportError(ValueError):
    """Bad input for an export (missing pymilvus, a collection of another shape, an over-long value) or a Milvus
    error, in one line naming the URI and collection."""


def _json_object(text: str) -> dict[str, Any]:
    with contextlib.suppress(json.JSONDecodeError):
        if isinstance(value := json.loads(text or "{}"), dict):
            return value
    raise ValueError(f"--index-params must be a JSON object, got {text!r}")


@dataclass
class MilvusConfig:
    """Options of `uniretrieve index export-milvus`, resolved."""

    index_type: str = field(
        default="AUTOINDEX",
        metadata=opt(
            f"Milvus index type (AUTOINDEX: Milvus chooses; milvus-lite builds {', '.join(LITE_BUILDS)}).",
            "--type",
        ),
    )
    index_params: dict[str, Any] = field(
        default_factory=dict,
        metadata=opt(
            'Index build parameters as JSON, e.g. \'{"M": 32, "efConstruction": 200}\'.',
            "--index-params",
            type=str,
            default="{}",
            parse=_json_object,
        ),
    )
    block_rows: int = field(
        default=1000, metadata=opt(f"Rows per upsert request (at most {MAX_BLOCK_ROWS}).", "--block-rows")
    )
    """Rows read, checked and upserted per request: the request is about block_rows × dim × 4 bytes."""

    def __post_init__(self) -> None:
        self.index_type = self.index_type.upper()
        if not 0 < self.block_rows <= MAX_BLOCK_ROWS:
            raise ValueError(f"--block-rows must be in 1..{MAX_BLOCK_ROWS}, got {self.block_rows}")
        if not isinstance(self.index_params, dict):
            raise ValueError("index_params must be a dict of index build parameters")


@dataclass
class ExportResult:
    """What an export did."""

    collection: str
    rows: int
    """Rows in the shards that end up in the collection (a row superseded by a later one of its id is not)."""
    written: int = 0
    skipped: int = 0
    """Rows already in the collection with the same id and content hash (a rerun or resumed export)."""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _milvus(uri: str, collection: str) -> Iterator[Any]:
    """pymilvus's MilvusClient; a missing pymilvus, and Milvus's exceptions (not ValueErrors), as one line."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError:
        raise MilvusExportError(INSTALL) from None
    try:
        yield MilvusClient
    except MilvusException as exc:
        raise MilvusExportError(f"Milvus at {uri}, collection {collection!r}: {exc.message}") from None


def collection_schema(dim: int, description: str = "") -> Any:
    """The collection for shards of `dim`: the shard columns by name, nulls allowed where shards allow them."""
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    s.add_field(ID, DataType.VARCHAR, is_primary=True, max_length=VARCHAR_MAX)
    # float32: float16 and float32 shard vectors both fit exactly (milvus-lite has no FLOAT16_VECTOR)
    s.add_field(EMBEDDING, DataType.FLOAT_VECTOR, dim=dim)
    for name, typ in OPTIONAL_COLUMNS.items():
        if name == "metadata":  # a JSON object string in the shards; Milvus filters on its keys
            s.add_field(name, DataType.JSON, nullable=True)
        elif typ == pa.int32():
            s.add_field(name, DataType.INT32, nullable=True)
        else:
            s.add_field(name, DataType.VARCHAR, max_length=VARCHAR_MAX, nullable=True)
    return s


def _signature(fields: list[dict[str, Any]]) -> dict[str, tuple[int, Any, bool]]:
    return {
        f["name"]: (int(f["type"]), (f.get("params") or {}).get("dim"), bool(f.get("is_primary")))
        for f in fields
    }


def _properties(ss: ShardSet) -> dict[str, str]:
    return {
        PREFIX + "settings_hash": ss.spec.settings_hash(),
        PREFIX + "settings": json.dumps(ss.spec.settings(), sort_keys=True, default=str),
        PREFIX + "model": json.dumps(ss.manifest.model, sort_keys=True, default=str),
        PREFIX + "metric": "ip",
    }


def _scan(ss: ShardSet) -> np.ndarray:
    """Refuse values longer than Milvus holds (naming the row) before anything is written; the rows to export: the
    last of each id, as `index add` replaces a changed row (a later encode segment re-encodes changed items)."""
    import pyarrow.compute as pc

    ids: list[pa.Array] = []
    for shard in ss.shards:
        if not shard.rows:
            continue
        t = ss.read_rows(np.arange(shard.start, shard.start + shard.rows), columns=STRINGS)
        for name in STRINGS:
            lengths = pc.fill_null(pc.binary_length(t.column(name)), 0)
            if pc.max(lengths).as_py() > VARCHAR_MAX:
                row = pc.index(pc.greater(lengths, VARCHAR_MAX), True).as_py()
                rid = t.column(ID)[row].as_py()
                raise MilvusExportError(
                    f"{shard.path}: {name} of id {rid[:80]!r}{'…' if len(rid) > 80 else ''} is "
                    f"{lengths[row].as_py()} bytes; a Milvus VARCHAR holds at most {VARCHAR_MAX}"
                )
        if len(ss.manifests) > 1 or len(ss.manifest.segments) > 1:  # one encode run has unique ids
            ids += t.column(ID).chunks
    n = ss.num_rows
    if not ids or pc.count_distinct(pa.chunked_array(ids)).as_py() == n:
        return np.ones(n, dtype=bool)
    t = pa.table({"id": pa.chunked_array(ids), "row": np.arange(n)})
    keep = np.zeros(n, dtype=bool)
    keep[t.group_by("id").aggregate([("row", "max")]).column("row_max").to_numpy()] = True
    return keep


def _literal(s: str) -> str:
    """A Milvus filter string literal: C-style escapes, what milvus-lite's parser reads (filter_params templates,
    which would need none, are a parse error in milvus-lite 3.2)."""
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        s = s.replace(a, b)
    return f'"{s}"'


def _blocks(ss: ShardSet, keep: np.ndarray, block_rows: int) -> Iterator[tuple[np.ndarray, pa.Table, int]]:
    """(vectors, columns, shard number) of the rows to export, in global order; a block is within one shard."""
    start, shard = 0, 0
    for vectors, table in ss.iter_vector_blocks(block_rows, columns=(ID, *SCALARS)):
        while start >= ss.shards[shard].start + ss.shards[shard].rows:
            shard += 1
        mask = keep[start : start + len(table)]
        start += len(table)
        if mask.any():
            yield vectors[mask], table.filter(pa.array(mask)), shard


def export_to_milvus(
    source_dirs: str | Path | Sequence[str | Path],
    uri: str,
    collection: str,
    config: MilvusConfig | None = None,
    *,
    overwrite: bool = False,
    import_files: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Write every shard row into `collection` (created with the shards' schema and settings, an IP index).

    Idempotent and resumable. A new collection gets plain inserts (ids are unique after `_scan`), then its index,
    built once over the sealed segments. An existing one (a rerun, or a run that stopped) is checked against the
    shards; per block, rows already there with the same id and content hash are skipped and the rest upserted
    (insert would double them: Milvus does not deduplicate primary keys), so no row is doubled or left stale. One
    query per block costs far less than re-sending every vector. Another dim, schema or model is refused unless
    `overwrite` drops the collection. With `import_files`, the collection is made and the rows go to Parquet files
    for Milvus bulk import instead.
    """
    from uniretrieve.embed.reader import open_shards

    cfg, t0, lite = config or MilvusConfig(), time.perf_counter(), uri.endswith(".db")
    ss = open_shards(source_dirs)
    if lite and cfg.index_type not in LITE_BUILDS:
        raise MilvusExportError(
            f"milvus-lite does not build {cfg.index_type} indexes (it would search by brute force); use one of "
            f"{', '.join(LITE_BUILDS)}, or a Milvus server for {cfg.index_type}"
        )
    files_dir = None if import_files is None else _empty_dir(Path(import_files))
    with _milvus(uri, collection) as MilvusClient:  # before the scan: a missing pymilvus is said at once
        keep = _scan(ss)
        if not ss.complete:
            log(
                f"note: the encode of {ss.roots} is unfinished; exporting the {ss.num_rows} rows written so far"
            )
        res = ExportResult(collection, int(keep.sum()))
        client = MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
        try:
            fresh = _prepare(client, uri, collection, ss, cfg, overwrite, log)
            if files_dir is not None:
                res.files = _write_files(ss, keep, files_dir, log)
            else:
                _send(client, collection, _blocks(ss, keep, cfg.block_rows), fresh, res)
            client.flush(collection)  # seal the segments, so the index is built over them
            if fresh:
                client.create_index(collection, _index_params(client, cfg, lite))
            client.load_collection(collection)
        finally:
            client.close()
    res.seconds = time.perf_counter() - t0
    if files_dir is None:
        log(
            f"exported {res.rows} rows to {collection} at {uri}: {res.written} written, {res.skipped} already "
            f"there ({res.seconds:.1f} s, {res.rows / max(res.seconds, 1e-9):.0f} rows/s)"
        )
    return res


def _send(client: Any, collection: str, blocks: Iterator, fresh: bool, res: ExportResult) -> None:
    """Insert into a new collection (ids are unique after `_scan`); into an existing one, upsert what `_changed`."""
    for vectors, table, _ in blocks:
        cols = {c: table.column(c).to_pylist() for c in (ID, *SCALARS)}
        rows = [{EMBEDDING: v, **{c: vals[i] for c, vals in cols.items()}} for i, v in enumerate(vectors)]
        if not fresh:
            rows = _changed(client, collection, rows)
            res.skipped += len(vectors) - len(rows)
        if rows:
            (client.insert if fresh else client.upsert)(collection, rows)
            res.written += len(rows)


def _changed(client: Any, collection: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows not already in the collection with the same content hash (a row without a hash always counts)."""
    found = client.query(
        collection,
        filter=f"{ID} in [{', '.join(_literal(r[ID]) for r in rows)}]",
        output_fields=[ID, "content_hash"],
        consistency_level="Strong",  # see the rows an interrupted run wrote
    )
    have = {f[ID]: f.get("content_hash") for f in found}
    return [r for r in rows if r["content_hash"] is None or have.get(r[ID], 0) != r["content_hash"]]


def _prepare(
    client: Any, uri: str, collection: str, ss: ShardSet, cfg: MilvusConfig, overwrite: bool, log: Callable
) -> bool:
    """Create the collection (True), or check that an existing one fits these shards (False)."""
    props = _properties(ss)
    if client.has_collection(collection) and overwrite:
        client.drop_collection(collection)
        log(f"dropped the existing collection {collection}")
    elif client.has_collection(collection):
        desc = client.describe_collection(collection)
        want, have = _signature(collection_schema(ss.dim).to_dict()["fields"]), _signature(desc["fields"])
        had = (desc.get("properties") or {}).get(PREFIX + "settings_hash")
        dim = have[EMBEDDING][1] if EMBEDDING in have else None
        problem = ""
        if dim != ss.dim:
            problem = f"has {EMBEDDING} dim {dim}, the shards have dim {ss.dim}"
        elif have != want:
            diff = sorted({name for name, _ in set(have.items()) ^ set(want.items())})
            problem = f"has another schema than the shards (fields {', '.join(diff)} differ)"
        elif had != props[PREFIX + "settings_hash"]:
            problem = f"records settings {had or 'none'}, the shards have {props[PREFIX + 'settings_hash']}"
        if problem:
            raise MilvusExportError(
                f"collection {collection!r} at {uri} {problem}; pass --overwrite to drop and recreate it, or "
                "choose another --collection"
            )
        names = client.list_indexes(collection, field_name=EMBEDDING)
        if not names:  # an earlier run stopped before its index was made
            client.create_index(collection, _index_params(client, cfg, uri.endswith(".db")))
        elif (kind := client.describe_index(collection, names[0]).get("index_type")) != cfg.index_type:
            log(f"note: {collection} keeps its {kind} index (--overwrite rebuilds it as {cfg.index_type})")
        client.load_collection(collection)  # queries need a loaded collection
        return False
    model = ss.spec.model_id or "unknown model"
    # the index comes after the rows (Milvus's bulk-load order: built once over sealed segments)
    client.create_collection(
        collection,
        schema=collection_schema(
            ss.dim, f"uniretrieve embeddings: {model}, {ss.dim}-d, {ss.spec.settings_hash()}"
        ),
        properties=props,
        consistency_level="Strong",
    )
    return True


def _index_params(client: Any, cfg: MilvusConfig, lite: bool) -> Any:
    params = client.prepare_index_params()
    # pymilvus 3 sends build parameters as flat key-values; milvus-lite 3.2 reads only a JSON "params" value and
    # silently builds with its defaults otherwise (IVF: 128 lists whatever nlist says)
    build = {"params": dict(cfg.index_params)} if lite and cfg.index_params else dict(cfg.index_params)
    # IP: the shards' vectors are L2-normalised, so inner product is their cosine, as in the FAISS index
    params.add_index(EMBEDDING, index_type=cfg.index_type, metric_type="IP", params=build)
    return params


def write_import_files(source_dirs: str | Path | Sequence[str | Path], out_dir: str | Path) -> list[str]:
    """Parquet files for Milvus bulk import into a `collection_schema` collection, one per shard (cluster only)."""
    from uniretrieve.embed.reader import open_shards

    ss = open_shards(source_dirs)
    return _write_files(ss, _scan(ss), _empty_dir(Path(out_dir)), lambda _: None)


def _empty_dir(out: Path) -> Path:
    if out.is_dir() and any(out.glob("*.parquet")):
        raise MilvusExportError(f"{out} already holds .parquet files; choose an empty directory")
    return out


def _write_files(ss: ShardSet, keep: np.ndarray, out: Path, log: Callable[[str], None]) -> list[str]:
    """The layout of pymilvus's own writer (`pymilvus.bulk_writer` LocalBulkWriter, PARQUET; types from its
    `constants.ARROW_TYPE_CREATOR`): one column per field, FLOAT_VECTOR as list<float32>, JSON as its text, ~32 MiB
    row groups. Superseded rows are left out, since bulk import does not deduplicate primary keys."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    group = max(1000, (32 << 20) // (ss.dim * 4 + 512))
    names = [s.path.stem for s in ss.shards]
    if len(set(names)) < len(names):  # several directories each have a part-000000: number them
        names = [f"{ss.roots.index(s.path.parent)}-{s.path.stem}" for s in ss.shards]
    files: list[str] = []
    with contextlib.ExitStack() as stack:
        writer, current = None, -1
        for vectors, table, shard in _blocks(ss, keep, group):
            if shard != current:
                stack.close()  # the previous shard's file: closed, then renamed into place
                path = out / f"{names[shard]}.parquet"
                tmp = stack.enter_context(atomic_path(path))
                writer, current = None, shard
                files.append(str(path))
            vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), ss.dim)
            t = table.append_column(EMBEDDING, vec.cast(pa.list_(pa.float32()))).select(
                [ID, EMBEDDING, *SCALARS]
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema)
                stack.callback(writer.close)
            writer.write_table(t, row_group_size=group)
    log(f"wrote {len(files)} import file(s), {int(keep.sum())} rows, to {out}")
    return files
