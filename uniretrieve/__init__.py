"""uniretrieve: UniME universal multimodal embeddings and the retrieval system around them.

Heavy modules (torch, transformers) load on first use, so `import uniretrieve` and `uniretrieve --version` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uniretrieve._version import __version__

if TYPE_CHECKING:
    from uniretrieve.models.encoder import Encoder
    from uniretrieve.types import Item

__all__ = ["Encoder", "Item", "__version__"]

_LAZY = {
    "Encoder": "uniretrieve.models.encoder",
    "Item": "uniretrieve.types",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uniretrieve' has no attribute {name!r}")
