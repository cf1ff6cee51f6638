"""Shared fixtures: tiny real checkpoints (built once per test session) and small images."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import BUILDERS

# Tiny models are dominated by per-op overhead: one intra-op thread is several times faster than two on a 2-core
# machine (and keeps tests from fighting pytest-xdist workers or each other for cores).
torch.set_num_threads(1)


@contextlib.contextmanager
def _one_thread(get: Callable[[], int], set_threads: Callable[[int], None]) -> Iterator[None]:
    before = get()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread while a test runs. The tiny models' matmuls are microseconds of work; on a shared,
    loaded CPU, torch's thread pool turns each into milliseconds of spinning (measured: a 6-step tiny run takes
    26 s with 2 threads under load, 1.7 s with 1)."""
    with _one_thread(torch.get_num_threads, torch.set_num_threads):
        yield


@contextlib.contextmanager
def one_faiss_thread() -> Iterator[None]:
    """2 shared cores: OpenMP spin-waiting across processes makes small FAISS jobs 10× slower."""
    import faiss

    with _one_thread(faiss.omp_get_max_threads, faiss.omp_set_num_threads):
        yield


@pytest.fixture
def faiss_one_thread() -> Iterator[None]:
    """One OpenMP thread for FAISS while a test runs (see `one_faiss_thread`)."""
    with one_faiss_thread():
        yield


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """family → directory of a tiny random checkpoint, built on first request."""
    root = tmp_path_factory.mktemp("tiny-models")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = BUILDERS[family](root / family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoints) -> Path:
    """A tiny LLaVA checkpoint (random weights) that loads in well under a second on CPU."""
    return tiny_checkpoints("llava")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    """One Encoder over `tiny_model_dir` on the CPU, shared by the encode tests."""
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(str(tiny_model_dir), device="cpu")


def make_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A deterministic RGB noise image of (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def image_files(tmp_path: Path) -> list[Path]:
    """Three small PNG/JPEG files of different sizes."""
    paths = []
    for i, (size, ext) in enumerate([((48, 40), "png"), ((64, 32), "jpg"), ((30, 50), "png")]):
        p = tmp_path / f"img{i}.{ext}"
        make_image(i, size).save(p)
        paths.append(p)
    return paths
