"""The index kinds, as one table: what each is in FAISS, what it costs, and how it is trained, tuned and searched.

Every module that treats index types differently (factory.py, build.py, tune.py, gpu.py, the searcher) looks the
kind up in `INDEX_KINDS` and reads an attribute, instead of comparing type names. Adding an index kind is adding
one `IndexKind` row here (its factory string and memory formula from a `Layout`, its search knob, its training and
GPU traits); `--type`, the tuner, the GPU copy and filtered search pick it up from the row. Only the `auto` policy
(factory.choose_index) names kinds, since choosing between them is its job.

Sizes follow autofaiss's model (criteo/autofaiss external/metadata.py): Flat 4·N·d bytes; HNSW 4·N·d + 8·M·N
(level-0 links); IVF-Flat 4·N·d + 8·N + 4·c·d; IVF-PQ N·(M+8) + 4·c·d (+ the OPQ matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How flat, IVF and HNSW store full vectors: float32, or float16 through FAISS's SQfp16 codec (half the memory;
# scores differ from float32 ones by fp16 rounding of unit vectors, ~1e-3). IVF-PQ stores codes either way.
STORAGES = {"fp32": ("Flat", 4), "fp16": ("SQfp16", 2)}
HNSW_M = 32
ID_BYTES = 8  # IVF lists store a 64-bit id per vector
PQ_TRAIN_ROWS = 65536  # FAISS subsamples PQ codebook training to 256 points × 256 centroids
EF_SEARCH_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def flat_bytes(n: int, d: int, storage: str = "fp32") -> int:
    return STORAGES[storage][1] * n * d


def hnsw_bytes(n: int, d: int, m: int = HNSW_M, storage: str = "fp32") -> int:
    return STORAGES[storage][1] * n * d + 8 * m * n


def ivf_bytes(n: int, d: int, nlist: int, storage: str = "fp32") -> int:
    return (STORAGES[storage][1] * d + ID_BYTES) * n + 4 * nlist * d


def ivfpq_bytes(n: int, d: int, nlist: int, m: int, opq_dim: int) -> int:
    coarse_d = opq_dim or d
    return (
        (m + ID_BYTES) * n + 4 * nlist * coarse_d + (4 * d * opq_dim if opq_dim else 0) + 4 * 256 * coarse_d
    )


@dataclass(frozen=True)
class Layout:
    """The resolved shape of one index: everything its factory string and memory formula depend on."""

    storage: str = "fp32"
    nlist: int = 0
    hnsw_m: int = 0
    pq_m: int = 0
    pq_nbits: int = 0
    opq_dim: int = 0
    refine: bool = False
    """Re-rank PQ candidates with 8-bit scalar-quantised full vectors (FAISS Refine(SQ8))."""

    @property
    def codec(self) -> str:
        return STORAGES[self.storage][0]


@dataclass(frozen=True)
class Knob:
    """The search-time parameter that trades speed for recall, tuned per index. FAISS's ParameterSpace sets it
    through every wrapper the factory adds (OPQ's IndexPreTransform, Refine, GPU shards), so no kind needs its own
    setter."""

    name: str
    """FAISS parameter name; "" for an exact index (nothing to tune)."""
    candidates: Callable[[int, int], list[int]]
    """(nlist, k) → ascending values for the tuner to try."""
    widen: Callable[[int, int, int, int], int]
    """(tuned value, fetch, k, nlist) → the value that reaches the tuned recall for `fetch` results instead of k."""


def _nprobe_candidates(nlist: int, k: int) -> list[int]:
    return sorted({*(2**i for i in range(0, 32) if 2**i < nlist), nlist})


def _nprobe_widen(value: int, fetch: int, k: int, nlist: int) -> int:
    return min(int(nlist or value), math.ceil(value * (fetch / k)))  # more results: proportionally more lists


def _ef_candidates(nlist: int, k: int) -> list[int]:
    return [v for v in EF_SEARCH_LADDER if v >= k] or [k]


def _ef_widen(value: int, fetch: int, k: int, nlist: int) -> int:
    return max(fetch, math.ceil(value * (fetch / k)))  # the beam must hold at least `fetch` results


NPROBE = Knob("nprobe", _nprobe_candidates, _nprobe_widen)
EF_SEARCH = Knob("efSearch", _ef_candidates, _ef_widen)
EXACT = Knob("", lambda nlist, k: [0], lambda value, fetch, k, nlist: value)


def _selector(index: Any, sel: Any) -> Any:
    import faiss

    return faiss.SearchParameters(sel=sel)


def _ivf_selector(index: Any, sel: Any) -> Any:
    """Every list probed: a restricted search must not miss passing rows in lists the tuned nprobe skips."""
    import faiss

    return faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(index).nlist)


def _hnsw_setup(index: Any, ef_construction: int) -> None:
    index.hnsw.efConstruction = ef_construction


def _ivfpq_setup(index: Any, ef_construction: int) -> None:
    import faiss

    # the factory turns on polysemous code training, useful only for Hamming-filtered search (which we do not
    # use) and ~20× slower to train
    faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False


def _ivfpq_factory(lay: Layout) -> str:
    opq = f"OPQ{lay.pq_m}_{lay.opq_dim}," if lay.opq_dim else ""
    return f"{opq}IVF{lay.nlist},PQ{lay.pq_m}x{lay.pq_nbits}" + (",Refine(SQ8)" if lay.refine else "")


def _ivfpq_memory(n: int, d: int, lay: Layout) -> int:
    return ivfpq_bytes(n, d, lay.nlist, lay.pq_m, lay.opq_dim) + (n * d if lay.refine else 0)


@dataclass(frozen=True)
class IndexKind:
    """One row of the table: an index type `--type` accepts."""

    name: str
    factory: Callable[[Layout], str]
    """The FAISS index_factory string."""
    memory: Callable[[int, int, Layout], int]
    """Expected bytes of the finished index for n × d vectors."""
    knob: Knob
    """The search-time parameter the tuner sets (EXACT: none)."""
    lists: bool = False
    """IVF: needs nlist (its training is k-means over the sample)."""
    graph: bool = False
    """HNSW: needs hnsw_m links per node."""
    pq: bool = False
    """Stores PQ codes: needs code size/bits, sized to the memory budget."""
    trains: bool = False
    """Trained on a sample before vectors are added."""
    min_train_rows: int = 0
    """Training rows needed beyond 39 per list (PQ codebooks)."""
    gpu: bool = True
    """FAISS has a classic GPU index for it (HNSW has none, faiss#3264)."""
    gpu_fp16: bool = False
    """Keep vectors in fp16 on the GPU (flat: halves memory; recall loss is below fp16 rounding of unit vectors)."""
    gpu_kmeans: bool = False
    """Run its k-means training on the GPUs through a GPU flat clustering index."""
    setup: Callable[[Any, int], None] | None = None
    """(new FAISS index, efConstruction) → set build-time options the factory string cannot express."""
    selector_params: Callable[[Any, Any], Any] | None = _selector
    """(index, IDSelector) → FAISS search parameters restricting a search to the selected ids; None where the
    index cannot (HNSW's graph walk cannot reach rows cut off by the filter): those rows are scored exactly."""

    @property
    def param(self) -> str:
        return self.knob.name

    @property
    def exact(self) -> bool:
        return not self.knob.name


INDEX_KINDS: dict[str, IndexKind] = {
    k.name: k
    for k in (
        IndexKind(
            "flat",
            factory=lambda lay: lay.codec,
            memory=lambda n, d, lay: flat_bytes(n, d, lay.storage),
            knob=EXACT,
            gpu_fp16=True,
        ),
        IndexKind(
            "ivf",
            factory=lambda lay: f"IVF{lay.nlist},{lay.codec}",
            memory=lambda n, d, lay: ivf_bytes(n, d, lay.nlist, lay.storage),
            knob=NPROBE,
            lists=True,
            trains=True,
            gpu_kmeans=True,
            selector_params=_ivf_selector,
        ),
        IndexKind(
            "ivfpq",
            factory=_ivfpq_factory,
            memory=_ivfpq_memory,
            knob=NPROBE,
            lists=True,
            pq=True,
            trains=True,
            min_train_rows=PQ_TRAIN_ROWS,
            setup=_ivfpq_setup,
            selector_params=_ivf_selector,
        ),
        IndexKind(
            "hnsw",
            factory=lambda lay: f"HNSW{lay.hnsw_m},{lay.codec}",
            memory=lambda n, d, lay: hnsw_bytes(n, d, lay.hnsw_m, lay.storage),
            knob=EF_SEARCH,
            graph=True,
            gpu=False,
            setup=_hnsw_setup,
            selector_params=None,
        ),
    )
}
INDEX_TYPES = tuple(INDEX_KINDS)


def kind_of(name: str) -> IndexKind:
    """The kind called `name` (an index.json `type` or a `--type` value)."""
    try:
        return INDEX_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown index type {name!r} (known: {', '.join(INDEX_KINDS)})") from None
