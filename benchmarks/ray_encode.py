"""The Ray engine's overhead on one machine: `encode --engine ray` against the plain path, same model and corpus.

    python -m benchmarks.ray_encode                         # 2,000 generated scenes, unime-tiny, 2 runs each
    python -m benchmarks.ray_encode --scenes 200 --runs 1   # quick
    python -m benchmarks.ray_encode --actors 2 --json out.json

The corpus is the demo's: generated scene images (urban1k layout, a seed the model never saw). Each run is a fresh
process (`encode_corpus` as the CLI calls it) into an empty folder; it reports the whole-process wall time, the time
to the first embedded batch (start-up: Ray, its actors, the model loads) and the steady items/s after it (what
grows with the corpus; the engine's overhead goal, ≤ 15 %, is on this rate). The two shard sets are compared: same ids, vectors within fp16 rounding.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from benchmarks.timing import run_header

app = typer.Typer(add_completion=False)


def _corpus(work: Path, scenes: int, seed: int) -> Path:
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = work / "corpus"
    if not (out / "urban1k" / "image").is_dir():
        generate(
            GenerateConfig(out=str(out), seed=seed, train_scenes=0, test_scenes=scenes, layouts=("urban1k",))
        )
    return out / "urban1k" / "image"


_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.embed.pipeline import encode_corpus
marks = []
cfg = EncodeConfig(**json.loads(sys.argv[1]))
r = encode_corpus(cfg, on_batch=lambda n: marks.append((time.perf_counter(), n)))
print(json.dumps({"marks": [t - t0 for t, _ in marks], "encoded": r.encoded, "loop_s": r.encode_seconds,
                  "total_s": time.perf_counter() - t0}))
"""


def _run(images: Path, out: Path, model: str, batch: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One encode in a fresh process. Its steady rate: items after the first batch came back, over the time
    since (start-up — Ray, actors, model loads — is reported apart, as `first_batch_s`)."""
    shutil.rmtree(out, ignore_errors=True)
    # shards of 128 rows: chunks finish (and batches come back) all through the run, so the steady rate is seen
    cfg = {
        "input": str(images),
        "output": str(out),
        "model": model,
        "batch_size": batch,
        "progress": False,
        "shard_rows": 128,
        **extra,
    }
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"encode {cfg} failed:\n{p.stderr[-2000:]}")
    d = json.loads(p.stdout.strip().splitlines()[-1])
    marks = d["marks"]
    per_batch = d["encoded"] / max(len(marks), 1)
    steady = (len(marks) - 1) * per_batch / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
    return {
        "wall_s": round(wall, 2),
        "first_batch_s": round(marks[0], 2) if marks else None,
        "items_per_s": round(steady, 1),
        "loop_items_per_s": round(d["encoded"] / d["loop_s"], 1) if d["loop_s"] else None,
    }


def _compare(a: Path, b: Path) -> dict[str, Any]:
    from uniretrieve.embed.reader import open_shards

    va, ta = open_shards(a).read_all(columns=("id",))
    vb, tb = open_shards(b).read_all(columns=("id",))
    ia, ib = np.argsort(ta.column("id").to_pylist()), np.argsort(tb.column("id").to_pylist())
    same_ids = sorted(ta.column("id").to_pylist()) == sorted(tb.column("id").to_pylist())
    return {"same_ids": same_ids, "rows": len(va), "max_abs_diff": float(np.abs(va[ia] - vb[ib]).max())}


@app.command()
def main(
    scenes: Annotated[int, typer.Option(help="Generated scene images to encode.")] = 2000,
    runs: Annotated[int, typer.Option(help="Runs of each path (medians reported).")] = 2,
    actors: Annotated[int, typer.Option(help="Encoder actors of the Ray run.")] = 2,
    model: Annotated[str, typer.Option("--model", "-m")] = "unime-tiny",
    batch_size: Annotated[int, typer.Option()] = 16,
    workers: Annotated[int, typer.Option(help="DataLoader workers of the plain path.")] = 1,
    seed: Annotated[int, typer.Option()] = 7,
    work: Annotated[Path | None, typer.Option(help="Work folder (default: a temp folder).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    root = work or Path(tempfile.mkdtemp(prefix="ray-encode-"))
    images = _corpus(root, scenes, seed)
    paths = {
        "plain": {"workers": workers},
        f"ray ({actors} actors)": {"engine": "ray", "actors": actors},
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in range(runs):  # interleaved, so drift in the machine's state hits both alike
        for name, extra in paths.items():
            results[name].append(_run(images, root / name.split()[0], model, batch_size, extra))
    summary = {
        name: {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "items_per_s": statistics.median(r["items_per_s"] for r in rs),
            "first_batch_s": statistics.median(r["first_batch_s"] or 0.0 for r in rs),
            "runs": rs,
        }
        for name, rs in results.items()
    }
    plain, ray_name = summary["plain"], next(n for n in summary if n != "plain")
    ray = summary[ray_name]
    report = {
        **run_header("benchmarks.ray_encode"),
        "scenes": scenes,
        "model": model,
        "paths": summary,
        # extra time per item at the steady rate (negative: the Ray engine is faster than the plain path)
        "steady_overhead": round(plain["items_per_s"] / ray["items_per_s"] - 1, 3)
        if ray["items_per_s"]
        else None,
        "wall_overhead": round(ray["wall_s"] / plain["wall_s"] - 1, 3),
        "equal": _compare(root / "plain", root / "ray"),
    }
    print(f"{'path':<18} {'wall s':>8} {'1st batch s':>12} {'steady items/s':>15}")
    for name, s in summary.items():
        print(f"{name:<18} {s['wall_s']:>8.1f} {s['first_batch_s']:>12.1f} {s['items_per_s']:>15.1f}")
    print(
        f"Ray engine: time per item at the steady rate {report['steady_overhead']:+.1%}, whole process "
        f"{report['wall_overhead']:+.1%} (vs plain); shard sets equal: {report['equal']}"
    )
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    if work is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app()
