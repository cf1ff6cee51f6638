"""Fault injection for the Ray engine's tests: an encoder actor that kills its own process once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from uniretrieve.embed.ray_engine import EmbedActor


class DyingOnce(EmbedActor):
    """Exits its process (as a killed node would) on its `after`-th batch, the first time only: the `marker` file
    records that one died, so the restarted actor (and the other one) work normally."""

    marker: str = ""
    after: int = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        marker = Path(self.marker)
        if self.calls >= self.after and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(row)
