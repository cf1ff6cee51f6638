"""Checkpoint → (model, processor, spec): name resolution, family detection, optional LoRA merge."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from uniretrieve.models.backbones import BackboneSpec, ChatWrapper, spec_for_model_type
from uniretrieve.models.names import REGISTERED_MODELS


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says which and what to do."""


@dataclass
class LoadedBackbone:
    model: Any
    processor: Any
    spec: BackboneSpec
    wrapper: ChatWrapper
    model_id: str
    """What the user asked for (registered name, hub id or path as given)."""
    source: str
    """What was actually loaded: a directory or a hub id."""
    adapter: str | None
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    """The processor settings applied on top of the checkpoint's (they change the embeddings)."""


def resolve_source(name_or_path: str) -> str:
    """Registered name → its checkpoint; an existing path → itself; anything else is taken as a hub id."""
    reg = REGISTERED_MODELS.get(name_or_path)
    if reg is not None:
        if reg.shipped:
            path = Path(str(resources.files("uniretrieve").joinpath(reg.source)))
            if not (path / "config.json").exists():
                raise ModelLoadError(
                    f"the built-in {name_or_path} has no weights at {path}; rebuild them with "
                    f"`uniretrieve train {name_or_path} --output runs/{name_or_path} --install`"
                )
            return str(path)
        return reg.source
    return name_or_path


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or Path(s).exists() or s.count("/") > 1


def read_model_type(source: str) -> str:
    """`model_type` from config.json, read as JSON so no remote code runs before the family is known."""
    p = Path(source).expanduser()
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise ModelLoadError(f"{p} has no config.json: it is not a transformers checkpoint directory")
        try:
            return json.loads(cfg.read_text())["model_type"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ModelLoadError(f"{cfg} is not a valid transformers config: {exc}") from exc
    if _looks_like_path(source):
        raise ModelLoadError(f"model path {source} does not exist")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source, trust_remote_code=False).model_type
    except (
        ValueError
    ) as exc:  # remote-code configs refuse without trust_remote_code but still name model_type
        msg = str(exc)
        if "trust_remote_code" in msg:
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(source, "config.json")).read_text())["model_type"]
        raise ModelLoadError(f"cannot load {source!r}: {msg}") from exc
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load {source!r}: it is not a local directory and the Hugging Face hub did not provide it "
            f"({exc.__class__.__name__}). Download the checkpoint and pass its directory."
        ) from exc


def text_model_type(config: Any) -> str | None:
    text_cfg = getattr(config, "text_config", None)
    return (
        getattr(text_cfg, "model_type", None) if text_cfg is not None else getattr(config, "model_type", None)
    )


def load_backbone(
    name_or_path: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | None = None,
    attn_implementation: str | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> LoadedBackbone:
    """Load model and processor, merge `adapter` if given, and set the tokenizer's padding.

    trust_remote_code: the caller's permission to run Python code bundled with the checkpoint, which a family
    such as phi3_v needs (its `BackboneSpec.trust_remote_code`: a need, never a permission). Without it such a
    checkpoint is refused before any of its code is imported.

    model_kwargs: passed on to the model's `from_pretrained` (e.g. `quantization_config` and `device_map` for a 4-bit
    training base); with a `device_map` the weights are placed by it, not moved to `device`.
    """
    import transformers
    from transformers import AutoProcessor

    source = resolve_source(name_or_path)
    spec = spec_for_model_type(read_model_type(source), source=source)
    check_remote_code(spec, name_or_path, source, trust_remote_code)
    model_cls = getattr(transformers, spec.model_class)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    kwargs.update(model_kwargs or {})
    try:
        model = model_cls.from_pretrained(source, **kwargs)
        processor = AutoProcessor.from_pretrained(
            source, trust_remote_code=spec.trust_remote_code, **processor_settings(spec, processor_kwargs)
        )
    except OSError as exc:
        raise ModelLoadError(f"cannot load {source!r}: {exc}") from exc
    if adapter is not None:
        model = merge_adapter(model, adapter)
    if "device_map" not in kwargs:  # quantized weights cannot be moved after loading
        model.to(device)
    model.eval()
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = spec.padding_side
    if (
        tok.pad_token is None
    ):  # Llama/Mistral tokenizers ship without one; any id works under the attention mask
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    wrapper = spec.wrapper_for(text_model_type(model.config), frozenset(tok.get_vocab()))
    settings = processor_settings(spec, processor_kwargs)
    return LoadedBackbone(model, processor, spec, wrapper, name_or_path, source, adapter, settings)


def check_remote_code(spec: BackboneSpec, name_or_path: str, source: str, allowed: bool) -> None:
    """Refuse a family that runs checkpoint code unless the user opted in (a flag or an API argument)."""
    if spec.trust_remote_code and not allowed:
        where = name_or_path if name_or_path == source else f"{name_or_path} ({source})"
        raise ModelLoadError(
            f"{where} is a {spec.family} checkpoint, which runs Python code shipped with the checkpoint; "
            "if you trust it, pass --trust-remote-code (API: trust_remote_code=True)"
        )


def processor_settings(spec: BackboneSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registry's processor settings for the family, updated by the caller's."""
    return {**spec.processor_kwargs, **(overrides or {})}


def merge_adapter(model: Any, adapter: str) -> Any:
    """Load a peft LoRA adapter onto `model` and fold it into the weights for inference."""
    p = Path(adapter).expanduser()
    if not (p / "adapter_config.json").exists():
        raise ModelLoadError(f"{p} is not a LoRA adapter directory (no adapter_config.json)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(p)).merge_and_unload()


def weight_hash(source: str, adapter: str | None = None) -> str:
    """sha256 over the weight files (names and bytes) of a local checkpoint and its adapter.

    For a hub id without a local directory the id itself is hashed: there is no file to read.
    """
    h = hashlib.sha256()
    for root in (source, adapter):
        if root is None:
            continue
        p = Path(root).expanduser()
        if not p.is_dir():
            h.update(root.encode())
            continue
        for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 24), b""):
                    h.update(block)
    return h.hexdigest()
