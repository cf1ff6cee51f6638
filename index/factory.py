"""Which FAISS index to build: a factory string from corpus size, dim and a memory budget, with the reason.

What each kind is (factory string, memory formula, knob) is the table in kinds.py; this module resolves a layout for
an explicit `--type`, and holds the `auto` policy. Its order differs from autofaiss (which picks HNSW whenever it
fits and never targets a recall): exact flat while the per-query scan is cheap, then HNSW (small/medium corpora,
CPU) or IVF-Flat (large corpora, or GPU where HNSW has no kernels, docs/design-notes.md#faiss-on-gpu), then IVF-PQ
when full vectors do not fit the budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from uniretrieve.index.kinds import (
    HNSW_M,
    INDEX_KINDS,
    INDEX_TYPES,
    STORAGES,
    Layout,
    flat_bytes,
    hnsw_bytes,
    ivf_bytes,
    ivfpq_bytes,
)

# Exact search while N·d ≤ this: a 1e8-float scan (400 MB, e.g. 100k × 1024 or 25k × 4096) is tens of ms per query
# batch on a CPU; beyond, an ANN index answers in a few ms at the target recall.
FLAT_MAX_ELEMENTS = 100_000_000
# HNSW build cost grows as N·log N with large constants; past this IVF builds far faster at equal recall.
HNSW_MAX_ROWS = 2_000_000
# PQ code sizes (bytes/vector) that both CPU and classic GPU IVF-PQ accept (faiss wiki "Faiss-on-the-GPU").
PQ_CODE_SIZES = (96, 64, 56, 48, 32, 28, 24, 20, 16, 12, 8, 4)
# CPU IVF-PQ takes larger codes too; at small budgets they are what reaches high recall on real embeddings
# (benchmarks/RESULTS.md, search on real embeddings: 50k × 384 at 20 MB, PQ96 0.85, PQ192 0.95). A GPU build keeps to
# PQ_CODE_SIZES; a searcher that cannot move such an index to a GPU searches it on the CPU.
CPU_PQ_CODE_SIZES = (192, 128, *PQ_CODE_SIZES)
REFINE_K_FACTOR = 16  # PQ candidates re-ranked per result by the SQ8 refine stage


class IndexChoiceError(ValueError):
    """No index type fits the constraints; the message says what would."""


@dataclass(frozen=True)
class IndexChoice:
    """A resolved index: type, FAISS factory string, its parameters, expected memory, and why it was chosen."""

    type: str
    factory: str
    expected_bytes: int
    reason: str
    nlist: int = 0
    pq_m: int = 0
    pq_nbits: int = 0
    opq_dim: int = 0
    hnsw_m: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_training(self) -> bool:
        return INDEX_KINDS[self.type].trains

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bytes(text: str | int) -> int:
    """'8GB', '512M', '1.5GiB', '1000000' → bytes (K/M/G/T powers of 1024, as autofaiss and `free` read them)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not m:
        raise ValueError(f"cannot read {text!r} as a size; write e.g. 8GB, 512MB or 1.5G")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


MIN_TRAIN_PER_CENTROID = 39  # FAISS warns below 39 training points per k-means centroid
MAX_TRAIN_PER_CENTROID = 256  # FAISS's max_points_per_centroid: it subsamples anything beyond


def pq_nbits_for(n: int) -> int:
    """Bits per PQ sub-code: 8 (256 centroids) once FAISS's minimum of 39 training points per centroid is met, fewer
    for small corpora (down to 4), so every codebook is trained on enough points."""
    return int(min(8, max(4, math.floor(math.log2(max(n, 1) / MIN_TRAIN_PER_CENTROID)))))


def default_nlist(n: int) -> int:
    """IVF lists: 4·√N rounded to a power of two (autofaiss `get_optimal_nb_clusters` for N < 1M), with at least
    39 training points per list (FAISS warns below that) and at least one list."""
    if n < MIN_TRAIN_PER_CENTROID * 2:
        return 1
    c = 2 ** round(math.log2(4 * math.sqrt(n)))
    return int(max(1, min(c, n // MIN_TRAIN_PER_CENTROID)))


def opq_dim_for(d: int, m: int) -> int:
    """OPQ output dim, or 0 for none. OPQ rotates (and reduces to 4·M dims when d is larger) so that the
    M sub-vectors carry balanced variance, the case where 8-bit codebooks help most (Ge et al. 2013, "Optimized
    Product Quantization"); with d ≤ 4·M plain PQ on sub-vectors of ≤4 dims is already fine-grained."""
    return 4 * m if d > 4 * m else 0


def make_choice(
    index_type: str,
    n: int,
    d: int,
    *,
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int = HNSW_M,
    reason: str = "",
    budget: int | None = None,
    train_n: int | None = None,
    storage: str = "fp32",
    gpu: bool = False,
    refine: bool | None = None,
) -> IndexChoice:
    """The factory string and expected memory for an explicit type (`--type flat|ivf|ivfpq|hnsw`); `storage`
    (fp32 | fp16) is how flat, IVF and HNSW keep full vectors; `gpu`: the build runs on a GPU (PQ codes ≤ 96
    bytes); `refine` False: no SQ8 re-ranking copy of the vectors (an on-disk index keeps nothing per vector in
    RAM)."""
    kind = INDEX_KINDS.get(index_type)
    if kind is None:
        raise IndexChoiceError(
            f"unknown index type {index_type!r}; choose auto or one of {', '.join(INDEX_TYPES)}"
        )
    if storage not in STORAGES:
        raise IndexChoiceError(f"unknown vector storage {storage!r}; choose one of {', '.join(STORAGES)}")
    why = reason or f"--type {index_type} was asked for"
    lay = Layout(storage=storage, hnsw_m=hnsw_m if kind.graph else 0)
    if kind.lists:
        c = nlist or default_nlist(n)
        if c > n:
            raise IndexChoiceError(f"nlist={c} is more than the {n} vectors; use fewer lists or --type flat")
        lay = replace(lay, nlist=c)
    if kind.pq:
        lay = _pq_layout(lay, n, d, pq_m=pq_m, budget=budget, train_n=train_n, gpu=gpu)
        if refine is False:
            lay = replace(lay, refine=False)
        # Re-rank PQ candidates with 8-bit scalar-quantised vectors (d bytes each) when that fits: PQ alone
        # plateaus well below recall@10 = 0.95 on dense embeddings, SQ8 scores are within ~1e-3 of exact ones.
        why += (
            f"; SQ8 re-ranking of {REFINE_K_FACTOR}·k PQ candidates"
            if lay.refine
            else "; no room for SQ8 re-ranking: recall is capped by PQ accuracy"
        )
    return IndexChoice(
        kind.name,
        kind.factory(lay),
        kind.memory(n, d, lay),
        why,
        nlist=lay.nlist,
        pq_m=lay.pq_m,
        pq_nbits=lay.pq_nbits,
        opq_dim=lay.opq_dim,
        hnsw_m=lay.hnsw_m,
        params={"k_factor_rf": REFINE_K_FACTOR} if lay.refine else {},
    )


def _pq_layout(
    lay: Layout,
    n: int,
    d: int,
    *,
    pq_m: int | None,
    budget: int | None,
    train_n: int | None,
    gpu: bool = False,
) -> Layout:
    """Code size (the largest that fits the budget unless given), OPQ, bits and SQ8 re-ranking for IVF-PQ."""
    c = lay.nlist
    m = pq_m or _pq_m_for_budget(n, d, c, budget, gpu)
    if m is None:
        need = ivfpq_bytes(n, d, c, 4, opq_dim_for(d, 4))
        raise IndexChoiceError(
            f"even the smallest IVF-PQ index (4-byte codes) needs ~{format_bytes(need)} for {n} vectors, more than "
            f"the memory budget {format_bytes(budget or 0)}; raise --memory-budget"
        )
    opq_dim = opq_dim_for(d, m)
    if (opq_dim or d) % m:
        raise IndexChoiceError(f"PQ with {m} sub-quantizers needs a dim divisible by {m}; dim is {d}")
    nbits = pq_nbits_for(train_n or n)  # codebooks are trained on the sample, so its size sets the bits
    refine = budget is None or ivfpq_bytes(n, d, c, m, opq_dim) + n * d <= budget
    return replace(lay, pq_m=m, pq_nbits=nbits, opq_dim=opq_dim, refine=refine)


def _pq_m_for_budget(n: int, d: int, nlist: int, budget: int | None, gpu: bool = False) -> int | None:
    """The largest PQ code (bytes) that fits the budget, at most d/2 (sub-vectors of ≥2 dims) and dividing d;
    from the GPU-compatible sizes when building on a GPU."""
    for m in PQ_CODE_SIZES if gpu else CPU_PQ_CODE_SIZES:
        opq_dim = opq_dim_for(d, m)
        if m * 2 > d or (opq_dim or d) % m:
            continue
        if budget is None or ivfpq_bytes(n, d, nlist, m, opq_dim) <= budget:
            return m
    return None


def choose_index(
    n: int,
    d: int,
    *,
    memory_budget: int,
    gpu: bool = False,
    train_n: int | None = None,
    storage: str = "fp32",
) -> IndexChoice:
    """`--type auto`: the exact index while it fits and is cheap, else the best ANN index that fits the budget."""
    if n <= 0:
        raise IndexChoiceError("the shards hold no vectors; nothing to index")
    flat = flat_bytes(n, d, storage)
    budget_s = format_bytes(memory_budget)
    if flat <= memory_budget and (n * d <= FLAT_MAX_ELEMENTS or n < 10_000):
        return make_choice(
            "flat",
            n,
            d,
            storage=storage,
            reason=f"{n}×{d} {storage} vectors ({format_bytes(flat)}) "
            f"fit {budget_s} and an exact scan is cheap at this size (N·d ≤ {FLAT_MAX_ELEMENTS:.0e}): "
            f"exact search",
        )
    c = default_nlist(n)
    hnsw = hnsw_bytes(n, d, storage=storage)
    if not gpu and n <= HNSW_MAX_ROWS and hnsw <= memory_budget:
        return make_choice(
            "hnsw",
            n,
            d,
            storage=storage,
            reason=f"{n} vectors: too many for a fast exact scan; "
            f"HNSW{HNSW_M} ({format_bytes(hnsw)}) fits {budget_s} and gives the lowest CPU latency "
            f"at high recall below {HNSW_MAX_ROWS:.0e} vectors",
        )
    ivf = ivf_bytes(n, d, c, storage)
    if ivf <= memory_budget:
        why = "HNSW has no GPU kernels" if gpu else f"HNSW builds slowly past {HNSW_MAX_ROWS:.0e} vectors"
        if not gpu and n <= HNSW_MAX_ROWS:
            why = "HNSW's links do not fit the budget"
        return make_choice(
            "ivf",
            n,
            d,
            nlist=c,
            storage=storage,
            reason=f"{n} vectors: IVF{c} keeps full "
            f"{storage} vectors ({format_bytes(ivf)} fits {budget_s}); {why}",
        )
    choice = make_choice("ivfpq", n, d, nlist=c, budget=memory_budget, reason="", train_n=train_n, gpu=gpu)
    return IndexChoice(
        **{
            **choice.to_dict(),
            "reason": (
                f"full vectors ({format_bytes(flat)}) exceed {budget_s}: IVF-PQ with {choice.pq_m}-byte codes "
                f"({format_bytes(choice.expected_bytes)})"
                + (f", OPQ to {choice.opq_dim} dims" if choice.opq_dim else "")
            ),
        }
    )
