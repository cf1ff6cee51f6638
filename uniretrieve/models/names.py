"""Registered model names: short names that resolve to a checkpoint (a hub id or a directory shipped with us)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegisteredModel:
    source: str
    """A hub id, or a path relative to the uniretrieve package for shipped weights."""
    family: str
    description: str
    shipped: bool = False


# The official UniME releases (unime-method.md §5; DeepGlint-AI on the Hugging Face hub). They need the hub or a
# local copy: on a machine without network, pass the local directory instead.
REGISTERED_MODELS: dict[str, RegisteredModel] = {
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
