"""`index.json`: what an index directory holds and how it was made (the resolved config saved next to the artifact).

A version folder of an index (index/store.py) is `index.faiss` (CPU-loadable FAISS index), `idmap.parquet`
(index/idmap.py) and this file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from uniretrieve._version import __version__
from uniretrieve.config import ConfigError, no_cli, opt, strict_from_dict
from uniretrieve.index.factory import STORAGES, parse_bytes

INDEX_NAME = "index.faiss"
META_NAME = "index.json"
IDMAP_NAME = "idmap.parquet"
FORMAT = "uniretrieve-index"
FORMAT_VERSION = 2
"""2: versioned folders, `deleted` (rows replaced by updates)."""


class IndexMetaError(ValueError):
    """A missing or unreadable index.json, or an index that does not match what is asked of it."""


@dataclass
class BuildConfig:
    """Options of `uniretrieve index build` (and `add`), resolved. CLI spellings that differ from the field
    (`--type`, `--memory-budget 8GB`) are declared here, on the field."""

    index_type: str = field(default="auto", metadata=opt("auto | flat | ivf | ivfpq | hnsw.", "--type"))
    """auto | flat | ivf | ivfpq | hnsw."""
    memory_budget: int = field(
        default=8 << 30,
        metadata=opt(
            "Memory the index may take (and the IVF/PQ training sample), e.g. 8GB.",
            "--memory-budget",
            type=str,
            default="8GB",
            parse=parse_bytes,
        ),
    )
    """Bytes the finished index may take (and the bound `auto` chooses under)."""
    target_recall: float = field(
        default=0.95,
        metadata=opt(
            "recall@k vs exact search to tune to (its 95 % lower bound must reach it).", "--target-recall"
        ),
    )
    """recall@k against exact search whose lower confidence bound nprobe / efSearch are tuned to reach."""
    latency_ms: float | None = field(
        default=None, metadata=opt("Per-query latency budget (ms).", "--latency-ms")
    )
    """Optional per-query latency budget (single query, this machine) for the tuned parameter."""
    k: int = field(
        default=10, metadata=opt("Hits per query the recall target is for (search with this k).", "--k")
    )
    """The k of the recall target: tuned for recall@k, the promise holds for searches of k hits."""
    nlist: int | None = field(
        default=None, metadata=opt("IVF lists (default 4·√N, a power of two).", "--nlist")
    )
    """IVF lists; default 4·√N rounded to a power of two."""
    pq_m: int | None = field(
        default=None, metadata=opt("IVF-PQ code bytes (default: largest that fits).", "--pq-m")
    )
    """PQ code bytes; default the largest that fits the budget."""
    storage: str = field(
        default="fp32",
        metadata=opt(
            "fp32 | fp16: full vectors of flat/IVF/HNSW as float32 or float16 (half the memory).", "--storage"
        ),
    )
    """fp32 | fp16: how flat, IVF and HNSW indexes keep full vectors (fp16: FAISS SQfp16, half the memory)."""
    hnsw_m: int = field(default=32, metadata=no_cli())
    ef_construction: int = field(default=80, metadata=no_cli())
    """HNSW build-time beam (FAISS default 40; 80 gives higher-quality graphs for high-dimensional embeddings)."""
    block_rows: int = field(default=16384, metadata=opt("Vectors per streamed block.", "--block-rows"))
    """Vectors read and added per block: the streaming buffer is block_rows × dim × 4 bytes."""
    train_rows: int | None = field(default=None, metadata=no_cli())
    """Training sample size; default 256 per IVF list (FAISS's cap, more is subsampled away), ≥ 65,536 for PQ."""
    tune_queries: int = field(default=2000, metadata=no_cli())
    """Tuning queries: sampled from --tune-queries shards when given (the CLI's --tune-queries names query shard
    directories, an option of the command), else this many of the corpus's last rows, held out of the index while it
    is tuned (index/holdout.py)."""
    gpu: bool | None = field(
        default=None, metadata=opt("Use all visible GPUs / force the CPU.", "--gpu/--cpu")
    )
    """True: use all visible GPUs (error if none); False: CPU; None: GPUs when a FAISS GPU build sees any."""
    seed: int = field(default=0, metadata=no_cli())
    on_disk: bool = field(
        default=False,
        metadata=opt("IVF lists in a file, memory-mapped by search (indexes larger than RAM).", "--on-disk"),
    )
    """IVF(-PQ) inverted lists in files next to the index, memory-mapped by readers (index/ondisk.py); `--memory-budget`
    then bounds the RAM of the build (training sample, one fill range), not the lists."""
    workers: int = field(
        default=0, metadata=opt("Processes filling an on-disk index's lists (0: this process).", "--workers")
    )
    engine: str = field(
        default="local",
        metadata=opt("local | ray: who runs the on-disk fill (Ray tasks with ray).", "--engine"),
    )
    ray_address: str | None = field(
        default=None,
        metadata=opt("Ray cluster address for --engine ray (default: a local Ray).", "--ray-address"),
    )

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine must be local or ray, got {self.engine!r}")
        if self.workers < 0:
            raise ValueError(f"--workers must be ≥ 0, got {self.workers}")
        if self.on_disk and self.index_type not in ("auto", "ivf", "ivfpq"):
            raise ValueError(
                f"--on-disk keeps IVF lists in a file: use --type ivf or ivfpq, not {self.index_type}"
            )
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target recall must be in (0, 1], got {self.target_recall}")
        if self.block_rows <= 0 or self.k <= 0:
            raise ValueError("block_rows and k must be positive")
        if self.latency_ms is not None and self.latency_ms <= 0:
            raise ValueError("--latency-ms must be positive")
        if self.storage not in STORAGES:
            raise ValueError(f"--storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = f"{META_NAME} config") -> BuildConfig:
        """The config block of an index.json; unknown keys and newer schema versions are refused."""
        try:
            return strict_from_dict(cls, d, where=where)
        except ConfigError as exc:
            raise IndexMetaError(str(exc)) from None


@dataclass
class IndexMeta:
    """Contents of index.json."""

    dim: int
    num_vectors: int
    type: str
    factory: str
    metric: str = "ip"
    """Inner product on L2-normalised vectors (= cosine)."""
    model: dict[str, Any] = field(default_factory=dict)
    """model_id, weight_hash, family, prompt_regime ... of the shards (EmbeddingSpec settings)."""
    encoder: dict[str, Any] = field(default_factory=dict)
    """How to load the query model: the shards' Encoder.describe() (source, adapter, prompt regime ...)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """One entry per build/add: shard dirs, manifest hash, rows added, first internal id (and rows skipped as
    already present, ids updated)."""
    deleted: int = 0
    """Internal ids replaced by an update (their id-map row has `deleted` set; search skips them)."""
    search_params: dict[str, Any] = field(default_factory=dict)
    """The tuned parameter, e.g. {"nprobe": 32} or {"efSearch": 64}; {} for flat."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """Measured recall@k, latency, query kind, target, whether it was reached, and the sweep."""
    choice: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    built_on: str = "cpu"
    created: str = ""
    updated: str = ""
    uniretrieve_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def model_id(self) -> str:
        return str(self.model.get("model_id", ""))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_meta(directory: Path, meta: IndexMeta) -> None:
    from uniretrieve.embed.manifest import utc_now
    from uniretrieve.io import atomic_write_json

    meta.updated = utc_now()
    meta.created = meta.created or meta.updated
    meta.format_version = FORMAT_VERSION
    atomic_write_json(Path(directory) / META_NAME, meta.to_dict())


def read_meta(directory: Path) -> IndexMeta:
    """index.json of a version folder, or of the current version when `directory` is an index's root."""
    from uniretrieve.index.store import version_dir

    path = version_dir(directory) / META_NAME
    if not path.exists():
        raise IndexMetaError(
            f"{path} does not exist: {directory} is not an index directory (make one with "
            f"`uniretrieve index build`)"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexMetaError(f"cannot read {path}: {exc}; rebuild the index") from exc
    if d.get("format") != FORMAT:
        raise IndexMetaError(f"{path} is not a uniretrieve index description (format={d.get('format')!r})")
    if int(d.get("format_version", 0)) > FORMAT_VERSION:
        raise IndexMetaError(f"{path} was written by a newer uniretrieve; upgrade uniretrieve")
    known = {f.name for f in fields(IndexMeta)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise IndexMetaError(f"{path} has unknown key(s) {', '.join(unknown)}; rebuild the index")
    return IndexMeta(**d)
