"""Cross-modal vectors for the search benchmark: the built-in model's image embeddings as the database, its caption
embeddings as the queries (text → image, the demo's workload), in the layout of benchmarks/real_vectors.py.

    python -m benchmarks.crossmodal_vectors --rows 50000 --queries 2000     # generates and encodes what is missing
    python -m benchmarks.real_search --vectors /work/benchcache/unime-tiny-50000-2000 ...

`rows` generated scenes (seed 7, never trained on: the recipe trains on seed 0 and tests on seed 1) are encoded by
`uniretrieve encode` (the corpus encoder: resumable shards under `<cache>/unime-tiny-scenes-<rows>/`); the queries
are the long (Urban1K-layout) captions of `queries` database scenes drawn at random — the demo's main query, and
the model's strength (short captions are ambiguous among 50,000 scenes) — and the tuning queries (`tune.npy`, for
`index build --tune-queries`) those of `TUNE` other database scenes, so the recall the build promises is measured
on queries it never saw. `<cache>/unime-tiny-<rows>-<queries>/` then holds db.npy, queries.npy,
tune.npy, the exact top-100 of every query (gt_ids.npy, gt_scores.npy) and facts.json (the model, the seed, and how
often the exact search ranks the described image first: what the ANN rows approximate).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.real_vectors import DEFAULT_CACHE, GT_K, exact_top

SEED = 7
TUNE = 500

MODEL = "unime-tiny"


def scenes(rows: int, cache: Path) -> Path:
    """The generated corpus (Urban1K layout: images and their long captions), made once."""
    from uniretrieve.scenes.config import GenerateConfig
    from uniretrieve.scenes.generate import generate

    out = cache / f"unime-tiny-scenes-{rows}"
    if not (out / "urban1k" / "caption").is_dir():
        generate(
            GenerateConfig(out=str(out), seed=SEED, train_scenes=0, test_scenes=rows, layouts=("urban1k",))
        )
    return out


def image_vectors(corpus: Path, batch_size: int) -> tuple[list[str], np.ndarray]:
    """(scene ids, vectors) of every image, through the corpus encoder's resumable shards."""
    from uniretrieve.embed.config import EncodeConfig
    from uniretrieve.embed.pipeline import encode_corpus
    from uniretrieve.index.source import ShardSource

    shards = corpus / "embeddings"
    encode_corpus(
        EncodeConfig(
            input=str(corpus / "urban1k" / "image"), output=str(shards), model=MODEL, batch_size=batch_size
        )
    )
    ids: list[str] = []
    parts = []
    for vecs, table in ShardSource(shards).blocks(65536):
        parts.append(vecs)
        ids += [Path(x).stem for x in table.column("id").to_pylist()]
    return ids, np.concatenate(parts)


def long_caption(corpus: Path, scene_id: str) -> str:
    return (corpus / "urban1k" / "caption" / f"{scene_id}.txt").read_text(encoding="utf-8").strip()


def prepare(rows: int, queries: int, cache: Path = DEFAULT_CACHE, batch_size: int = 64) -> Path:
    """`<cache>/unime-tiny-<rows>-<queries>/` (made if missing); see the module doc."""
    from uniretrieve import Encoder
    from uniretrieve.types import Item

    out = cache / f"unime-tiny-{rows}-{queries}"
    if (out / "gt_ids.npy").exists():
        return out
    t0 = time.perf_counter()
    corpus = scenes(rows, cache)
    ids, db = image_vectors(corpus, batch_size)
    t_db = time.perf_counter() - t0
    rng = np.random.default_rng(SEED)
    picks = rng.permutation(len(ids))[: queries + TUNE]
    q_rows, tune_rows = picks[:queries], picks[queries:]
    encoder = Encoder.from_pretrained(MODEL)
    q = encoder.encode([Item(text=long_caption(corpus, ids[i])) for i in q_rows], batch_size=batch_size)
    tune = encoder.encode([Item(text=long_caption(corpus, ids[i])) for i in tune_rows], batch_size=batch_size)
    gt_s, gt_i = exact_top(db, q, min(GT_K, len(db)))
    facts = {
        "model": MODEL,
        "seed": SEED,
        "rows": len(db),
        "queries": queries,
        "tune_queries": TUNE,
        "exact_r1_described_image": round(float(np.mean(gt_i[:, 0] == q_rows)), 4),
        "exact_r10_described_image": round(float(np.mean((gt_i[:, :10] == q_rows[:, None]).any(1))), 4),
        "db_seconds": round(t_db, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    for name, arr in (("db", db), ("queries", q), ("tune", tune), ("gt_scores", gt_s), ("gt_ids", gt_i)):
        np.save(out / f"{name}.npy", arr)  # gt_ids last: its presence marks a complete folder
    print(json.dumps(facts))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    print(prepare(args.rows, args.queries, args.cache, args.batch_size))


if __name__ == "__main__":
    main()
