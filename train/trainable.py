"""What the training loop trains, and how its weights enter and leave a resumable checkpoint.

`LoraAdapter`: a student's LoRA adapter in peft format (the UniME stages; the frozen base is not saved).
`FullModel`: every weight of a module as float32 safetensors (the tiny recipe's full-parameter runs: generative
pretraining and the CLIP-style dual encoder). Both restore exactly, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from uniretrieve.train.checkpoint import ADAPTER, CheckpointError, load_adapter_weights


class Trainable(Protocol):
    module: torch.nn.Module
    """Put in train mode by the loop."""
    device: torch.device
    weights_dir: str
    """The folder of a checkpoint that holds the weights."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates, in a fixed order (the optimizer state is saved by position)."""
        ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...


class LoraAdapter:
    """The LoRA weights of a `train.student.Student` (float32 master weights)."""

    weights_dir = ADAPTER

    def __init__(self, student: Any) -> None:
        self.student = student
        self.module = student.model
        self.device = student.device

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.student.trainable_parameters()]

    def save(self, path: Path) -> None:
        self.student.model.save_pretrained(str(path))

    def load(self, path: Path) -> None:
        load_adapter_weights(self.student, path)


class FullModel:
    """All weights of `module` (frozen ones too, so a checkpoint is the whole model); the optimizer updates those
    that require gradients."""

    weights_dir = "model"
    FILE = "model.safetensors"

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.device = next(module.parameters()).device

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def save(self, path: Path) -> None:
        from safetensors.torch import save_model

        path.mkdir(parents=True, exist_ok=True)
        save_model(self.module, str(path / self.FILE))  # tied weights (LM head = embeddings) stored once

    def load(self, path: Path) -> None:
        from safetensors.torch import load_model

        f = path / self.FILE
        if not f.is_file():
            raise CheckpointError(f"{path} holds no {self.FILE}; the checkpoint is incomplete")
        load_model(self.module, str(f), device=str(self.device))
