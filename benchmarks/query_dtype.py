"""Query-model compute dtype (and torch.compile) on the CPU: CPU ms per query of `Encoder.encode` and agreement
with float32.

    python -m benchmarks.query_dtype                      # unime-tiny, 16 captions per call, 1 thread
    python -m benchmarks.query_dtype --dtypes float32,bfloat16 --batch 1,16 --calls 30 --compile --json-out d.json

What `uniretrieve serve --model-dtype` and `--compile` trade: process CPU time per query (all threads) and the
smallest cosine between each setting's query vectors and eager float32's (1.0 = identical). With `--compile` every
dtype gets a second row, its model compiled (`Encoder.compile`) and warmed up at each batch size before timing.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.timing import run_header


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unime-tiny")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", default="16", help="Captions per call; a comma list times each.")
    ap.add_argument("--compile", action="store_true", help="Also time each dtype compiled.")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)

    from uniretrieve.models.encoder import Encoder
    from uniretrieve.types import Item

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    texts = [
        f"a large striped orange triangle and a small blue star, scene {i}, near the top left"
        for i in range(max(batches))
    ]
    items = [Item(text=t) for t in texts]
    ref = np.asarray(Encoder.from_pretrained(args.model).encode(items))
    rows = []
    for dtype in args.dtypes.split(","):
        for compiled in (False, True) if args.compile else (False,):
            enc = Encoder.from_pretrained(args.model, dtype=dtype)
            t0 = time.perf_counter()
            if compiled:
                enc.compile()
            warm = {b: np.asarray(enc.encode(items[:b])) for b in batches}  # also compiles each batch kind
            warm_s = time.perf_counter() - t0
            for b in batches:
                t0 = time.process_time()
                for _ in range(args.calls):
                    enc.encode(items[:b])
                ms = 1000 * (time.process_time() - t0) / (args.calls * b)
                rows.append(
                    {
                        "dtype": dtype,
                        "compiled": compiled,
                        "batch": b,
                        "cpu_ms_per_query": round(ms, 3),
                        "min_cos_vs_float32": float((warm[b] * ref[:b]).sum(1).min()),
                        "warm_up_s": round(warm_s, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(
                {
                    **run_header("benchmarks.query_dtype"),
                    "model": args.model,
                    "threads": args.threads,
                    "rows": rows,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
