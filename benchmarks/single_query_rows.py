"""Where a single query's time goes in the Searcher on a built index: raw FAISS search, the same plus an id-map take
(fixed or its own ids), the take alone. Usage: python benchmarks/single_query_rows.py INDEX_DIR QUERIES.npy"""

import sys
import time
from pathlib import Path

import numpy as np

from uniretrieve.search.searcher import Searcher

s = Searcher.load(Path(sys.argv[1]))
q = np.load(sys.argv[2]).astype(np.float32)
sel = s.idmap.select(s.hit_columns)
fixed = np.arange(10, dtype=np.int64) * 1000


def loop(name, body, m=1000):
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(m):
            body(i)
        best = min(best, (time.perf_counter() - t0) / m * 1e6)
    print(name, round(best, 1))


loop("raw", lambda i: s._raw_search(q[i : i + 1], 10))
loop("raw + take fixed ids", lambda i: (s._raw_search(q[i : i + 1], 10), sel.take(fixed)))
loop("raw + take its ids", lambda i: sel.take(s._raw_search(q[i : i + 1], 10)[1][0]))
loop("take fixed alone", lambda i: sel.take(fixed))
loop("take random alone", lambda i: sel.take(np.random.randint(0, 200000, 10)))
