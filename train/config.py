"""Typed training configs: dataclasses with validation, YAML presets, dotted CLI overrides, the resolved config.

A run's config comes from, in increasing priority: the dataclass defaults, a YAML file (a path, or a preset name
from train/configs/), `--set key=value` overrides (values parsed as YAML), and explicit CLI options. The resolved
config is written next to every artifact (`save_config`), so any checkpoint says exactly how it was made
(litgpt's `hyperparameters.yaml` per step directory; docs/design-notes.md#configs-saved-with-checkpoints).

Parsing is generic over dataclass fields (train/config_dict.py): unknown keys and wrong types raise `ConfigError`
naming the file and the key. A saved config starts with `schema_version`; a file from a newer uniretrieve is refused, one without the key still loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from uniretrieve.config import SCHEMA_KEY, ConfigError, check_schema_version, versioned
from uniretrieve.io import atomic_write_text
from uniretrieve.train.config_dict import config_from_dict, config_to_dict

C = TypeVar("C")

PRESET_DIR = "configs"


# --------------------------------------------------------------------------------------------------------------
# The shared sections
# --------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with linear warmup, then cosine or linear decay (or constant)."""

    lr: float = 1e-4
    """Peak learning rate (reached at the end of warmup)."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0 to `lr`."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup, down to `min_lr_ratio * lr` at the last step."""
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    """Global L2 norm clipping of the trainable gradients; None disables clipping."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0; got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0; got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"optim.max_grad_norm must be > 0 or null; got {self.max_grad_norm}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0; got {self.weight_decay}")


@dataclass(kw_only=True)
class LoraConfig:
    """LoRA (peft) on the language model, optionally on the vision side."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] | None = None
    """Module name suffixes inside the language model; None = the backbone registry's `lora_targets`."""
    vision: bool = False
    """Also put LoRA on the vision tower/projector (stage 2 option; stage 1 keeps the vision side untouched)."""
    vision_targets: list[str] | None = None
    """Suffixes inside the vision modules; None = the registry's `vision_lora_targets`."""
    init: str = "default"
    """peft `init_lora_weights`: "default" (B = 0, the adapter starts as the identity), "gaussian", ..."""
    use_dora: bool = False
    quantize_4bit: bool = False
    """QLoRA: load the frozen base in NF4 with double quantization (E5-V's setting). Needs bitsandbytes and CUDA;
    without them training runs in full precision and says so."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1; got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0; got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1); got {self.dropout}")
        for name in ("targets", "vision_targets"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ConfigError(f"lora.{name} must be null (registry default) or a non-empty list")


@dataclass(kw_only=True)
class StepCheckpointConfig:
    """When the training loop saves resumable checkpoints and where a run continues from (train/loop.py)."""

    every_steps: int = 500
    """Save a resumable checkpoint every N optimizer steps (0 = none, only the final result)."""
    keep_last: int = 2
    """Keep this many newest step-* checkpoints (0 = keep all)."""
    resume: str = "auto"
    """"auto": continue from the newest checkpoint under output_dir if there is one; "never": start fresh and refuse
    an output_dir that already holds checkpoints; or the path of a step-* directory."""

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.keep_last < 0:
            raise ConfigError("checkpoint.every_steps and checkpoint.keep_last must be >= 0")
        if not self.resume:
            raise ConfigError('checkpoint.resume must be "auto", "never" or a checkpoint directory')


@dataclass(kw_only=True)
class CheckpointConfig(StepCheckpointConfig):
    """A LoRA stage's checkpoints: the step checkpoints plus the optional merged export."""

    merge: bool = False
    """At the end also write <output_dir>/merged: the full MLLM with the adapter folded in (vision as in the base)."""


@dataclass(kw_only=True)
class TrainConfig:
    """The part of a training config that every stage shares."""

    model: str
    """Base checkpoint: a directory, a hub id or a registered name (stage 2: a stage-1 merged directory)."""
    output_dir: str
    batch_size: int
    """Global batch: rows of the loss matrix, summed over all ranks."""
    chunk_size: int
    """Rows per forward pass on one rank (GradCache); bounds memory only, the gradient does not depend on it."""
    seed: int = 0
    max_steps: int | None = None
    """Optimizer steps; when null, `epochs` decides."""
    epochs: float | None = None
    precision: Literal["auto", "bf16", "bf16-autocast", "fp32"] = "auto"
    """auto: bf16 weights and autocast on CUDA, float32 on CPU; bf16-autocast: float32 weights, bf16 compute."""
    gradient_checkpointing: bool = False
    max_text_tokens: int | None = None
    """Truncate texts to this many tokens before prompting; null = the backbone default."""
    prompt_regime: Literal["e5v", "mmeb"] = "e5v"
    bucket_fill: float = 0.5
    """Each side of a batch is embedded in groups of rows of similar token count, each group at least this share
    real (not padding) tokens (uniretrieve/models/batching.py `length_buckets`); 0: one padded tensor per side.
    Rows are embedded independently, so only the compute changes."""
    log_every: int = 10
    device: str | None = None
    """"cuda", "cpu", ...; null = CUDA when present. Under torchrun each rank uses its LOCAL_RANK GPU."""
    trust_remote_code: bool = False
    """Allow a base (phi3_v) that runs Python code shipped with its checkpoint: the user's choice (this config or
    --trust-remote-code), never read from the checkpoint."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model must name a checkpoint (directory, hub id or registered name)")
        if not self.output_dir:
            raise ConfigError("output_dir must be set")
        if self.batch_size < 2:
            raise ConfigError(
                f"batch_size must be >= 2 (an in-batch loss needs pairs); got {self.batch_size}"
            )
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1; got {self.chunk_size}")
        if not 0.0 <= self.bucket_fill <= 1.0:
            raise ConfigError(f"bucket_fill must be in [0, 1]; got {self.bucket_fill}")
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError("set exactly one of max_steps and epochs (the other null)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1; got {self.max_steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0; got {self.epochs}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1; got {self.log_every}")


# --------------------------------------------------------------------------------------------------------------
# Files, presets, overrides
# --------------------------------------------------------------------------------------------------------------


def preset_dir() -> Path:
    return Path(str(resources.files("uniretrieve.train").joinpath(PRESET_DIR)))


def list_presets(prefix: str = "") -> list[str]:
    """Preset names (file stems in train/configs/) starting with `prefix`, sorted."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml") if p.stem.startswith(prefix))


def preset_path(name: str) -> Path:
    p = preset_dir() / f"{name}.yaml"
    if not p.is_file():
        raise ConfigError(
            f"no config file or preset named {name!r}; presets: {', '.join(list_presets()) or '(none)'}; "
            "or pass the path of a YAML file"
        )
    return p


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, got {type(data).__name__}")
    check_schema_version(data.pop(SCHEMA_KEY, None), str(path))  # saved configs carry one; presets need not
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: cannot set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`"optim.lr=1e-4"` → `("optim.lr", 1e-4)`; the value is parsed as YAML (`[a, b]`, `null`, `true` ...)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {exc}") from None
    return key, value


def load_config(
    cls: type[C],
    source: str | Path | None,
    overrides: Sequence[str] = (),
    **values: Any,
) -> C:
    """The resolved config: `source` (YAML path or preset name) < `overrides` ("a.b=value") < `values`.

    `values` may use dotted keys via `**{"checkpoint.merge": True}`; None values are ignored (an unset CLI option).
    """
    data: dict[str, Any] = {}
    where = "config"
    if source is not None:
        path = Path(source)
        if not path.is_file():
            path = preset_path(str(source))
        data = read_yaml(path)
        where = str(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value, f"{where} (override {text!r})")
    for key, value in values.items():
        if value is not None:
            _set_dotted(data, key, value, where)
    return config_from_dict(cls, data, where=where)


def save_config(cfg: Any, path: Path) -> Path:
    """Write the resolved config as YAML (atomically); `load_config(type(cfg), path)` reads it back equal."""
    header = f"# resolved {type(cfg).__name__} (uniretrieve); load with load_config or pass to --config\n"
    atomic_write_text(path, header + yaml.safe_dump(versioned(config_to_dict(cfg)), sort_keys=False))
    return path
