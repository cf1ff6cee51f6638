"""GPUs for building and searching: FAISS on all visible GPUs when the FAISS GPU build is installed, else an exact
torch matmul + top-k on CUDA.

Facts (docs/design-notes.md#faiss-on-gpu): classic GPU indexes are Flat, IVF-Flat and IVF-PQ (no HNSW; which kinds
have one is `IndexKind.gpu` in kinds.py); `GPU_MAX_SELECTION_K = 2048` (faiss/gpu/utils/DeviceDefs.cuh); GPU
indexes cannot be written, so they are copied back to the CPU before `write_index`. `faiss-gpu-cu12` wheels lack
sm_90 kernels;
install `uniretrieve[gpu]` (faiss-gpu>=1.15) on H100s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

GPU_MAX_K = 2048
QUERY_BATCH = 4096  # queries per GPU search call: bounds the [q, k] result and scratch buffers


class GpuUnavailableError(RuntimeError):
    """--gpu was asked for but neither a FAISS GPU build nor CUDA is usable."""


def faiss_gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu, which has no `get_num_gpus` GPU support compiled in)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None and hasattr(faiss, "StandardGpuResources") else 0
    except RuntimeError:
        return 0


def cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_gpu(flag: bool | None) -> bool:
    """--gpu/--cpu/(unset) → whether FAISS runs on GPUs. `--gpu` without a FAISS GPU build is allowed when CUDA is
    present (exact search then uses torch); without either it is an error."""
    if flag is False:
        return False
    n = faiss_gpu_count()
    if flag is True and n == 0 and cuda_device_count() == 0:
        raise GpuUnavailableError(
            "--gpu was given but no GPU is usable: FAISS has no GPU support here and torch sees no CUDA device. "
            "Install `uniretrieve[gpu]` (faiss-gpu>=1.15) on a CUDA machine, or drop --gpu."
        )
    return n > 0


def index_to_gpus(index: Any, *, fp16: bool = True) -> Any:
    """Copy a CPU index onto all visible GPUs, sharding the database across them (IndexShards), vectors in fp16
    where the kind allows (`IndexKind.gpu_fp16`)."""
    import faiss

    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    co.useFloat16 = fp16
    co.useFloat16CoarseQuantizer = False
    return faiss.index_cpu_to_all_gpus(index, co=co)


def index_to_cpu(index: Any) -> Any:
    import faiss

    return faiss.index_gpu_to_cpu(index)


def search_index(
    index: Any, queries: np.ndarray, k: int, *, on_gpu: bool, cpu_index: Any = None, params: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` in query batches; on a GPU index with k > 2048 the CPU copy answers (GPU selection is limited
    to 2048), so any k works."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    target = index
    if on_gpu and k > GPU_MAX_K:
        if cpu_index is None:
            raise ValueError(
                f"k={k} exceeds the GPU limit of {GPU_MAX_K} and no CPU copy of the index is at hand"
            )
        target, on_gpu = cpu_index, False
    step = QUERY_BATCH if on_gpu else max(1, len(queries))
    out_s = np.empty((len(queries), k), np.float32)
    out_i = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), step):
        q = queries[s : s + step]
        d, i = target.search(q, k, params=params) if params is not None else target.search(q, k)
        out_s[s : s + len(q)], out_i[s : s + len(q)] = d, i
    return out_s, out_i


class TorchExactIndex:
    """Exact inner-product search with torch (CUDA when present): the database lives on the device (fp16 on CUDA,
    float32 on CPU) in blocks; each block's matmul + top-k is merged into a running top-k, so memory is bounded by
    block size × queries and k has no 2048 limit."""

    def __init__(self, vectors: np.ndarray, *, device: str | None = None, block_rows: int = 262144) -> None:
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.block_rows = block_rows
        self.blocks = [
            torch.from_numpy(np.ascontiguousarray(vectors[s : s + block_rows], dtype=np.float32)).to(
                self.device, self.dtype
            )
            for s in range(0, len(vectors), block_rows)
        ]
        self.ntotal = len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return torch_topk_blocks(self.blocks, queries, k, device=self.device, dtype=self.dtype)


def torch_topk_blocks(
    blocks: Iterable[Any],
    queries: np.ndarray,
    k: int,
    *,
    device: Any = None,
    dtype: Any = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over `blocks` (numpy arrays or device tensors) with torch; same contract as
    index/exact.py `exact_search` (padding with -inf / -1). Scores are accumulated in float32."""
    import torch

    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    dt = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(dev, dt)
    nq = q.shape[0]
    best_s = torch.full((nq, 0), float("-inf"), device=dev)
    best_i = torch.full((nq, 0), -1, dtype=torch.int64, device=dev)
    ex = torch.from_numpy(exclude).to(dev) if exclude is not None else None
    offset = 0
    for block in blocks:
        b = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.asarray(block, np.float32))
        b = b.to(dev, dt)
        s = (q @ b.T).float()
        ids = torch.arange(offset, offset + b.shape[0], device=dev).expand(nq, -1)
        if ex is not None:
            s = s.masked_fill(ids == ex[:, None], float("-inf"))
        s_all = torch.cat([best_s, s], dim=1)
        i_all = torch.cat([best_i, ids], dim=1)
        kk = min(k, s_all.shape[1])
        best_s, pos = torch.topk(s_all, kk, dim=1)
        best_i = torch.gather(i_all, 1, pos)
        offset += b.shape[0]
    scores, ids = best_s.cpu().numpy(), best_i.cpu().numpy()
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((nq, pad), -np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((nq, pad), -1, np.int64)], axis=1)
    ids = np.where(np.isfinite(scores), ids, -1)
    return scores.astype(np.float32), ids.astype(np.int64)
