"""Registered model names: short names that resolve to a checkpoint (a hub id or a directory shipped with us)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class RegisteredModel:
    source: str
    """A hub id, or a path relative to the uniretrieve package for shipped weights."""
    family: str
    description: str
    shipped: bool = False


# The official UniME releases (docs/method.md#published-checkpoints; DeepGlint-AI on the Hugging Face hub). They
# need the hub or a local copy: on a machine without network, pass the local directory instead.
REGISTERED_MODELS: dict[str, RegisteredModel] = {
    "unime-tiny": RegisteredModel(
        "weights/unime-tiny",
        "llava",
        "built in: 5.6M-param LLaVA trained by our own pretraining + stage 1 + stage 2 on generated scenes; knows only "
        "that domain (MODEL_CARD.md beside the weights)",
        shipped=True,
    ),
    "unime-llava-1.6-7b": RegisteredModel(
        "DeepGlint-AI/UniME-LLaVA-1.6-7B", "llava_next", "UniME on LLaVA-1.6-Mistral-7B (paper Table 1/2)"
    ),
    "unime-phi3.5-v-4.2b": RegisteredModel(
        "DeepGlint-AI/UniME-Phi3.5-V-4.2B", "phi3_v", "UniME on Phi-3.5-Vision (remote code)"
    ),
    "unime-llava-onevision-7b": RegisteredModel(
        "DeepGlint-AI/UniME-LLaVA-OneVision-7B", "llava_onevision", "UniME on LLaVA-OneVision-7B"
    ),
}


def shipped_dir(name: str) -> Path:
    """Where a shipped model's files live inside the installed package."""
    return Path(str(resources.files("uniretrieve").joinpath(REGISTERED_MODELS[name].source)))
