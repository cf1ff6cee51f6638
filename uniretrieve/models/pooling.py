"""Pure tensor functions for turning hidden states into embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of each row, for left or right padding alike.

    attention_mask: [B, T] of 0/1. Returns [B] long. Flipping and taking argmax finds the last 1 from the end.
    """
    t = attention_mask.shape[1]
    return (t - 1) - attention_mask.flip(dims=[1]).int().argmax(dim=1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, D], attention_mask [B, T] → [B, D]: the final hidden state of each row's last real token."""
    idx = last_token_index(attention_mask).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows in float32 (bf16 norms lose precision)."""
    return F.normalize(x.float(), dim=-1)
