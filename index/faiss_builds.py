"""Which FAISS builds are installed. faiss-cpu is a default dependency; faiss-gpu replaces it (a swap, not an
addition): both wheels install the same `faiss` module, so with both present one overwrites the other's files and
which one runs depends on install order."""

from __future__ import annotations

import functools
import sys
from importlib import metadata

CPU_DIST = "faiss-cpu"
GPU_DISTS = ("faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11")
SWAP = 'pip uninstall -y faiss-cpu && pip install "faiss-gpu>=1.15"'


def installed_builds() -> dict[str, str]:
    """Installed FAISS distributions → their versions."""
    out = {}
    for name in (CPU_DIST, *GPU_DISTS):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def both_builds_message(builds: dict[str, str]) -> str | None:
    gpu = [f"{n} {v}" for n, v in builds.items() if n != CPU_DIST]
    if CPU_DIST not in builds or not gpu:
        return None
    return (
        f"warning: {CPU_DIST} {builds[CPU_DIST]} and {', '.join(gpu)} are both installed and overwrite each "
        f"other's `faiss` module; keep one (for the GPU build: {SWAP}, then reinstall faiss-gpu if imports fail)"
    )


@functools.cache
def warn_if_both_builds() -> None:
    """One stderr line, once per process, when a CPU and a GPU FAISS build are installed together."""
    msg = both_builds_message(installed_builds())
    if msg is not None:
        print(msg, file=sys.stderr)
