"""`EncodeConfig`: every knob of an encode run, validated, saved as `encode_config.json` next to the shards."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uniretrieve.config import no_cli, opt, strict_from_dict, trust_remote_code_opt, versioned
from uniretrieve.io import atomic_write_json

CONFIG_NAME = "encode_config.json"


@dataclass
class EncodeConfig:
    input: str = field(
        metadata=opt(
            "Image folder (recursive) or a .txt/.jsonl/.csv/.parquet table.", argument=True, type=Path
        )
    )
    """A folder of images (recursive) or a table: .txt, .jsonl, .csv, .parquet."""
    output: str = field(metadata=opt("Shard directory (created or resumed).", "--output", "-o", type=Path))
    """The shard directory (created; resumed when it holds a manifest made with the same settings)."""
    model: str = field(
        default="unime-tiny",
        metadata=opt("Checkpoint dir, hub id or registered name (built in: unime-tiny).", "--model", "-m"),
    )
    """Checkpoint directory, hub id or registered name (see `uniretrieve models`)."""
    adapter: str | None = field(default=None, metadata=opt("LoRA adapter directory merged into the model."))
    """A LoRA adapter directory merged into the model."""
    trust_remote_code: bool = field(default=False, metadata=trust_remote_code_opt())
    """The user's permission for a model that runs its checkpoint's code; never read from the checkpoint."""
    prompt_regime: str = field(default="e5v", metadata=opt("e5v (Summary-above prompts) or mmeb."))
    instruction: str | None = field(default=None, metadata=opt("One instruction for every item."))
    """One instruction for the whole corpus (a row's own `instruction` field wins)."""
    text_column: str | None = field(default=None, metadata=opt("Text column (default: 'text')."))
    """Default: `text` when present."""
    image_column: str | None = field(
        default=None, metadata=opt("Image path column, relative to the table (default: 'image').")
    )
    """Default: `image` when present. Relative paths are relative to the table's folder."""
    id_column: str | None = field(default=None, metadata=opt("Unique id column (default: <file>:<row>)."))
    """Default: `<file>:<row>` for tables, the relative path for image folders."""
    dtype: str = field(default="float16", metadata=opt("Stored vector type: float16 or float32."))
    """Vector storage type: float16 (half the bytes, ~3 significant digits) or float32."""
    batch_size: int = field(default=16, metadata=opt("Items per forward pass."))
    workers: int = field(default=0, metadata=opt("DataLoader workers decoding and preprocessing."))
    """DataLoader worker processes for image decoding and preprocessing (0: in the main process)."""
    shard_rows: int | None = field(
        default=None, metadata=opt("Rows per shard (default: ~256 MiB of vectors).")
    )
    """Rows per shard; default ~256 MiB of vectors (between 1,024 and 1,000,000 rows)."""
    device: str | None = field(
        default=None, metadata=opt("cpu, cuda, cuda:1 … (default: CUDA when present).")
    )
    model_dtype: str | None = field(default=None, metadata=opt("Compute dtype: bfloat16, float16, float32."))
    """Compute dtype (default bf16 on CUDA, float32 on CPU)."""
    max_text_tokens: int | None = field(default=None, metadata=opt("Truncate texts to this many tokens."))
    overwrite: bool = field(default=False, metadata=opt("Replace a directory made with other settings."))
    verify: bool = field(
        default=False,
        metadata=opt("Re-hash every stored shard on resume (size and rows are always checked)."),
    )
    """Re-hash every shard against the manifest before resuming; damaged shards' rows are encoded again. Small
    directories (≤ 64 MiB of shards) are re-hashed anyway."""
    allow_outside_root: bool = field(
        default=False, metadata=opt("Read image paths outside the corpus folder (absolute, '..', symlinks).")
    )
    """Let a table's image paths (and an image folder's symlinks) point outside the corpus root: the table's folder,
    or the image folder itself. Off by default, so a crafted table cannot make the run read other files."""
    rank: int | None = field(default=None, metadata=no_cli())
    """This process's rank; default: $RANK (torchrun on one machine; several machines: `--engine ray`)."""
    world_size: int | None = field(default=None, metadata=no_cli())
    """Number of processes splitting the input; default: $WORLD_SIZE (torchrun) or 1."""
    engine: str = field(
        default="local", metadata=opt("local (this process, or torchrun ranks) | ray (a Ray Data pipeline).")
    )
    """local: this process (or the torchrun ranks of one machine); ray: a Ray Data pipeline on a Ray cluster
    (embed/ray_engine.py), this process the only writer."""
    ray_address: str | None = field(
        default=None, metadata=opt("Ray cluster address for --engine ray (default: a local Ray).")
    )
    actors: int | None = field(
        default=None, metadata=opt("Encoder actors for --engine ray (default: one per GPU, else 1).")
    )
    progress: bool = field(default=True, metadata=opt("Show a progress bar."))

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be ≥ 0, got {self.workers}")
        if self.shard_rows is not None and self.shard_rows <= 0:
            raise ValueError(f"shard_rows must be positive, got {self.shard_rows}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be local or ray, got {self.engine!r}")
        if self.actors is not None and self.actors <= 0:
            raise ValueError(f"actors must be positive, got {self.actors}")
        rank, world = self.resolved_rank()
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world_size={world}), got {rank}")

    def resolved_rank(self) -> tuple[int, int]:
        """(rank, world_size) from the fields, else torchrun's environment, else (0, 1)."""
        rank = self.rank if self.rank is not None else int(os.environ.get("RANK", 0))
        world = self.world_size if self.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        return rank, world

    def corpus_settings(self) -> dict[str, Any]:
        """The settings that change which rows exist or what is embedded (they join the model's in settings_hash)."""
        return {
            "text_column": self.text_column,
            "image_column": self.image_column,
            "id_column": self.id_column,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = CONFIG_NAME) -> EncodeConfig:
        """The config back from `to_dict` or an `encode_config.json`; unknown keys and newer versions refused."""
        return strict_from_dict(cls, d, where=where)

    def save(self, root: Path) -> Path:
        path = Path(root) / CONFIG_NAME
        atomic_write_json(path, versioned(self.to_dict()))
        return path


def default_shard_rows(dim: int, dtype: str, target_bytes: int = 256 << 20) -> int:
    """Rows per shard for ~256 MiB of vectors (the reference's 256–512 MB shards; 32,768 rows at 4096-d fp16)."""
    per_row = dim * (2 if dtype == "float16" else 4)
    return int(min(1_000_000, max(1024, target_bytes // per_row)))
