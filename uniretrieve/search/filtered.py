"""Filtered search (`where`, deleted rows): over-fetch until k passing hits come back (fetch grows ×4, starting
from k · N / passing rows), then answer the few queries still short with a search restricted to the passing ids."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_OVERFETCH = (
    65536  # past this many candidates per query, a restricted search is cheaper than fetching more
)


class FilteredSearch:
    """The filtered half of `Searcher`; needs its `cpu_index`, `work`, `meta`, `kind` and `_raw_search`."""

    cpu_index: Any
    work: Any
    meta: Any
    kind: Any

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _wide_search(self, q: np.ndarray, fetch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`fetch` candidates with the search effort scaled by fetch/k: the tuned nprobe/efSearch reach the
        target recall for k results, and `fetch` results need proportionally more lists probed (or a wider beam)."""
        from uniretrieve.index.tune import set_param

        params = self.meta.search_params
        knob = self.kind.knob
        wider = {}
        if knob.name in params:
            nlist = int(self.meta.choice.get("nlist") or 0)
            wider[knob.name] = knob.widen(int(params[knob.name]), fetch, k, nlist)
        try:
            for name, value in wider.items():
                set_param(self.work, name, value)
            return self._raw_search(q, fetch)
        finally:
            for name in wider:
                set_param(self.work, name, int(params[name]))

    def _search_filtered(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.cpu_index.ntotal
        n_ok = int(allowed.sum())
        nq = len(q)
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        if n_ok == 0:
            return out_s, out_i
        want = min(k, n_ok)
        fetch = min(n, max(k, math.ceil(k * n / n_ok * 1.5)))
        pending = np.arange(nq)
        while len(pending):
            s, i = self._wide_search(q[pending], fetch, k)
            ok = (i >= 0) & allowed[np.where(i >= 0, i, 0)]
            still = []
            for row, qi in enumerate(pending):
                keep = np.flatnonzero(ok[row])[:k]
                if len(keep) >= want:
                    out_s[qi, : len(keep)], out_i[qi, : len(keep)] = s[row, keep], i[row, keep]
                else:
                    still.append(qi)
            pending = np.asarray(still, dtype=np.int64)
            if fetch >= min(n, MAX_OVERFETCH):
                break
            fetch = min(n, fetch * 4)
        if len(pending):
            s, i = self._restricted_search(q[pending], k, np.flatnonzero(allowed))
            out_s[pending], out_i[pending] = s, i
        return out_s, out_i

    def _restricted_search(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search only `ids`: FAISS's ID selector where the kind takes one (`IndexKind.selector_params`: flat,
        every IVF list probed), else exact scores of the reconstructed vectors (HNSW; IVF-PQ under a Refine wrapper,
        which does not accept IVF search parameters)."""
        import faiss

        from uniretrieve.index.exact import exact_search

        index = self.cpu_index
        restrict = self.kind.selector_params
        if restrict is None or "Refine" in self.meta.factory:
            vecs = index.reconstruct_batch(ids.astype(np.int64))
            s, local = exact_search([vecs], q, k)
            return s, np.where(local >= 0, ids[np.maximum(local, 0)], -1)
        sel = faiss.IDSelectorBatch(ids.astype(np.int64))
        return index.search(q, k, params=restrict(index, sel))
