"""Query-model compute dtype on the CPU: CPU ms per query of `Encoder.encode` and agreement with float32.

    python benchmarks/query_dtype.py                      # unime-tiny, 16 captions per call, 1 thread
    python benchmarks/query_dtype.py --dtypes float32,bfloat16 --batch 16 --calls 30 --json-out dtype.json

What `uniretrieve serve --model-dtype` trades: process CPU time per query (all threads) and the smallest cosine
between each dtype's query vectors and float32's (1.0 = identical).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unime-tiny")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)

    from uniretrieve.models.encoder import Encoder
    from uniretrieve.types import Item

    torch.set_num_threads(args.threads)
    texts = [
        f"a large striped orange triangle and a small blue star, scene {i}, near the top left"
        for i in range(args.batch)
    ]
    items = [Item(text=t) for t in texts]
    ref = np.asarray(Encoder.from_pretrained(args.model).encode(items))
    rows = []
    for dtype in args.dtypes.split(","):
        enc = Encoder.from_pretrained(args.model, dtype=dtype)
        out = np.asarray(enc.encode(items))  # also the warm-up call
        t0 = time.process_time()
        for _ in range(args.calls):
            enc.encode(items)
        ms = 1000 * (time.process_time() - t0) / (args.calls * args.batch)
        rows.append(
            {
                "dtype": dtype,
                "cpu_ms_per_query": round(ms, 3),
                "min_cos_vs_float32": float((out * ref).sum(1).min()),
            }
        )
        print(json.dumps(rows[-1]))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(
                {"model": args.model, "batch": args.batch, "threads": args.threads, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
