"""Where a single query's time goes in the Searcher on a built index: raw FAISS search, the same plus the hit-store
take of 10 rows (fixed ids or the query's own), the take alone, and `search_arrays` with its rows; µs per query,
best of 3 × 1,000 queries. Usage: python benchmarks/single_query_rows.py INDEX_DIR QUERIES.npy"""

import sys
import time
from pathlib import Path

import numpy as np

from uniretrieve.search.searcher import Searcher

s = Searcher.load(Path(sys.argv[1]))
q = np.load(sys.argv[2]).astype(np.float32)
cols = s.hit_columns
fixed = np.arange(10, dtype=np.int64) * 1000
n = s.store.rows


def take(ids):
    return s.store.take(ids, cols)


def loop(name, body, m=1000):
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(m):
            body(i)
        best = min(best, (time.perf_counter() - t0) / m * 1e6)
    print(name, round(best, 1), flush=True)


print("columns", cols, {c: s.store.columns[c].kind for c in cols})
loop("raw", lambda i: s._raw_search(q[i : i + 1], 10))
loop("raw + take fixed ids", lambda i: (s._raw_search(q[i : i + 1], 10), take(fixed)))
loop("raw + take its ids", lambda i: take(s._raw_search(q[i : i + 1], 10)[1][0]))
loop("take fixed alone", lambda i: take(fixed))
rand = np.random.default_rng(0).integers(
    0, n, (1000, 10)
)  # drawn before the loop: randint alone costs ~15 µs
loop("take random alone", lambda i: take(rand[i]))
loop("search_arrays, no rows", lambda i: s.search_arrays(q[i : i + 1], k=10))
loop("search_arrays + rows", lambda i: s.search_arrays(q[i : i + 1], k=10).rows)
