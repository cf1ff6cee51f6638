"""The GPU check, one step at a time, each step's record merged into one JSON file (benchmarks/gpu_check.sh runs
every step under its own time limit, so a step that overruns costs only its own rows).

    python -m benchmarks.gpu_check --step env|encode:<preset>|exact|tests --out gpu_check.json
    python -m benchmarks.gpu_check --step all --cpu-smoke --out /tmp/smoke.json   # the CPU paths, tiny, seconds

Steps:
- env: torch / CUDA / GPU / transformers versions, whether FAISS (and FAISS GPUs) can be imported.
- encode:<preset>: benchmarks/encode_throughput.py's `bench_preset` for LLaVA-OneVision-7B and Qwen2-VL-7B (random
  weights, bf16, sdpa; one step each): the reference loop, the Encoder in-process and with workers, items/s, tokens/s, MFU
  against the measured bf16 matmul rate, cosine to the reference.
- exact: torch exact search (index/gpu.py TorchExactIndex, fp16 database on the GPU) at 1M × 1024 and 1M × 3584
  against the same search on the CPU (float32 torch matmul, all cores), and FAISS IndexFlatIP on the CPU where
  FAISS imports; batch QPS, single-query latency, recall@10 of the GPU results against the CPU's.
- tests: `pytest -m gpu` (the tests marked for CUDA), its summary line and exit status.

--cpu-smoke runs the same code on the CPU at toy sizes (shrunk presets, 20k-row search): what tests/ checks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENCODE_PRESETS = ("llava-onevision-7b", "qwen2-vl-7b")
EXACT_SIZES = ((1_000_000, 1024), (1_000_000, 3584))
SMOKE_SIZES = ((20_000, 64), (20_000, 128))
FAISS_GPU_NOTE = (
    "faiss-gpu 1.15.1 (the first with Hopper kernels) is a 135.3 MB wheel, over the 64 MiB a device call "
    "carries: no FAISS-GPU rows; FAISS CPU rows run when a faiss-cpu wheel (18.8 MB) is carried"
)


def env_step(smoke: bool) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "faiss_note": FAISS_GPU_NOTE,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": p.name,
            "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "capability": list(p.major_minor),
        }
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        info["faiss"] = None
    return info


def encode_step(smoke: bool, work: Path, name: str) -> dict[str, Any]:
    """One preset (its own step, so that an overrun of one 7B model keeps the other's rows)."""
    import shutil

    import torch

    from benchmarks.encode_throughput import QUICK_COUNTS, bench_preset
    from benchmarks.model_configs import PRESETS, shrunk

    device = "cpu" if smoke else "cuda"
    n_img, n_txt = (2, 4) if smoke else QUICK_COUNTS["cuda"]
    preset = shrunk(PRESETS[name]) if smoke else PRESETS[name]
    cache = work / f"encode-{preset.name}"
    try:
        rec = bench_preset(
            preset,
            device=device,
            cache=cache,
            n_images=n_img,
            n_texts=n_txt,
            batch_size=16,
            workers=0 if smoke else min(8, (os.cpu_count() or 2) // 2),
            ref_text_batch=3,
            repeats=1 if smoke else 2,
            mfu=True,
            attn="sdpa",
            seed=0,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # a 16 GB checkpoint: the disk holds 64 GiB
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"device": device, "images": n_img, "texts": n_txt} | rec


def _unit_rows(n: int, d: int, device: str, seed: int) -> np.ndarray:
    """n × d unit float32 rows, generated in blocks on `device` (seconds on a GPU for 14 GB, not minutes)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 131072):
        x = torch.randn(min(131072, n - s), d, generator=g, device=device)
        out[s : s + len(x)] = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
    return out


def _time_search(search, queries: np.ndarray, k: int, singles: int) -> tuple[np.ndarray, float, float]:
    """(ids of the batch, batch QPS, single-query ms) with a warm-up call first."""
    search(queries[:2], k)
    t0 = time.perf_counter()
    _, ids = search(queries, k)
    batch_qps = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(singles):
        search(queries[i : i + 1], k)
    return ids, batch_qps, (time.perf_counter() - t0) / singles * 1000


def exact_step(smoke: bool) -> dict[str, Any]:
    import torch

    from uniretrieve.index.exact import exact_search, recall_at_k
    from uniretrieve.index.gpu import TorchExactIndex

    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for n, d in SMOKE_SIZES if smoke else EXACT_SIZES:
        t0 = time.perf_counter()
        x = _unit_rows(n, d, gpu, seed=d)
        # queries near database rows, so the top 10 are real neighbours rather than a noise floor
        pick = np.random.default_rng(d).choice(n, 1000, replace=False)
        q = x[pick] + 0.5 * _unit_rows(1000, d, gpu, seed=d + 1)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        row: dict[str, Any] = {
            "n": n,
            "dim": d,
            "queries": len(q),
            "data_s": round(time.perf_counter() - t0, 1),
        }
        t0 = time.perf_counter()
        on_dev = TorchExactIndex(x, device=gpu)
        row["gpu_device"] = gpu
        row["gpu_load_s"] = round(time.perf_counter() - t0, 2)
        gpu_ids, row["gpu_qps_batch"], row["gpu_ms_single"] = _time_search(on_dev.search, q, 10, 50)
        del on_dev
        if gpu == "cuda":
            torch.cuda.empty_cache()
        cpu_q = q[:100]  # the CPU is ~100× slower: 100 queries time it well enough
        cpu = TorchExactIndex(x, device="cpu")
        _, row["cpu_torch_qps_batch"], row["cpu_torch_ms_single"] = _time_search(cpu.search, cpu_q, 10, 5)
        gt_s, gt_i = exact_search((x[s : s + 262144] for s in range(0, n, 262144)), cpu_q, 20)
        row["gpu_recall@10_vs_cpu_fp32"] = round(recall_at_k(gpu_ids[:100], gt_i, gt_s, 10), 4)
        row["gpu_speedup_batch"] = round(row["gpu_qps_batch"] / row["cpu_torch_qps_batch"], 1)
        try:
            import faiss

            flat = faiss.IndexFlatIP(d)
            flat.add(x)
            _, row["cpu_faiss_qps_batch"], row["cpu_faiss_ms_single"] = _time_search(
                flat.search, cpu_q, 10, 5
            )
            del flat
        except ImportError:
            row["cpu_faiss_qps_batch"] = None  # no FAISS in this environment
        rows.append({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
        del x, cpu
        gc.collect()
    return {"rows": rows}


def tests_step(smoke: bool) -> dict[str, Any]:
    target = ["tests/test_index_build.py"] if smoke else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *target]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    lines = [x for x in res.stdout.strip().splitlines() if x.strip()]
    return {
        "command": " ".join(cmd[2:]),
        "returncode": res.returncode,
        "summary": lines[-1] if lines else res.stderr.strip()[-300:],
        "failures": [x for x in lines if x.startswith(("FAILED", "ERROR"))][:20],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def merge_into(out: Path, step: str, record: dict[str, Any]) -> None:
    from uniretrieve.io import atomic_write_json

    data = json.loads(out.read_text()) if out.exists() else {"benchmark": "gpu_check"}
    data.setdefault("steps", {})[step] = record
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(out, data)


STEPS = ("env", *(f"encode:{p}" for p in ENCODE_PRESETS), "exact", "tests")


def run_step(step: str, smoke: bool, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        if step == "env":
            rec = env_step(smoke)
        elif step.startswith("encode:"):
            rec = encode_step(smoke, work, step.split(":", 1)[1])
        elif step == "exact":
            rec = exact_step(smoke)
        elif step == "tests":
            rec = tests_step(smoke)
        else:
            raise ValueError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    except Exception as exc:  # recorded, so the other steps' rows are kept
        rec = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return rec | {"seconds": round(time.perf_counter() - t0, 1), "cpu_smoke": smoke}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", choices=[*STEPS, "all"], default="all")
    ap.add_argument("--out", type=Path, required=True, help="the JSON file each step's record is merged into")
    ap.add_argument("--work", type=Path, default=Path("/tmp/uniretrieve-gpu-check"))
    ap.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU at toy sizes")
    args = ap.parse_args(argv)
    for step in STEPS if args.step == "all" else (args.step,):
        rec = run_step(step, args.cpu_smoke, args.work)
        merge_into(args.out, step, rec)
        print(json.dumps({step: rec}, default=str)[:2000], flush=True)


if __name__ == "__main__":
    main()
