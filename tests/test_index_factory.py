"""The auto choice of index type from corpus size, dim and memory budget, and its explanations."""

from __future__ import annotations

import pytest

from uniretrieve.index.factory import (
    IndexChoiceError,
    choose_index,
    default_nlist,
    flat_bytes,
    make_choice,
    parse_bytes,
)
from uniretrieve.index.kinds import INDEX_KINDS

GB = 1 << 30


def test_parse_bytes() -> None:
    assert parse_bytes("8GB") == 8 * GB
    assert parse_bytes("512M") == 512 << 20
    assert parse_bytes("1.5GiB") == int(1.5 * GB)
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="8GB"):
        parse_bytes("lots")


def test_auto_prefers_exact_while_small_and_fitting() -> None:
    c = choose_index(20_000, 1024, memory_budget=8 * GB)
    assert c.type == "flat" and c.factory == "Flat" and c.expected_bytes == flat_bytes(20_000, 1024)
    assert "exact" in c.reason


def test_auto_mid_size_is_hnsw_on_cpu_and_ivf_on_gpu() -> None:
    c = choose_index(500_000, 1024, memory_budget=8 * GB)
    assert c.type == "hnsw" and c.factory == "HNSW32,Flat" and "HNSW" in c.reason
    g = choose_index(500_000, 1024, memory_budget=8 * GB, gpu=True)
    assert g.type == "ivf" and g.factory.startswith("IVF") and "GPU" in g.reason


def test_auto_large_corpus_is_ivf_when_full_vectors_fit() -> None:
    c = choose_index(5_000_000, 1024, memory_budget=64 * GB)
    assert c.type == "ivf" and c.nlist == default_nlist(5_000_000) and c.expected_bytes <= 64 * GB


def test_auto_tight_budget_is_ivfpq_with_opq_and_within_budget() -> None:
    c = choose_index(1_000_000, 4096, memory_budget=2 * GB)
    assert c.type == "ivfpq" and c.expected_bytes <= 2 * GB
    assert c.factory.startswith(f"OPQ{c.pq_m}_{4 * c.pq_m},IVF") and f"PQ{c.pq_m}x8" in c.factory
    assert "IVF-PQ" in c.reason and "exceed" in c.reason
    # a budget so small that even 4-byte codes do not fit is refused with the size needed
    with pytest.raises(IndexChoiceError, match="raise --memory-budget"):
        choose_index(1_000_000, 4096, memory_budget=1 << 20)


def test_cpu_builds_may_take_pq_codes_past_the_gpus_96_bytes() -> None:
    from uniretrieve.index.factory import PQ_CODE_SIZES

    # 200k × 384 at 48 MB: full vectors (293 MiB) do not fit, 192-byte codes do (the largest with ≥ 2 dims each)
    cpu = choose_index(200_000, 384, memory_budget=48 << 20)
    assert cpu.type == "ivfpq" and cpu.pq_m == 192 and cpu.expected_bytes <= 48 << 20
    gpu = choose_index(200_000, 384, memory_budget=48 << 20, gpu=True)
    assert gpu.pq_m == max(PQ_CODE_SIZES) == 96
    assert make_choice("ivfpq", 200_000, 384, budget=48 << 20, gpu=True).pq_m == 96
    # sub-vectors keep ≥ 2 dims: at d = 256 the largest code is 128 bytes
    assert choose_index(200_000, 256, memory_budget=30 << 20).pq_m == 128


def test_explicit_types_and_their_errors() -> None:
    assert make_choice("ivf", 10_000, 64, nlist=64).factory == "IVF64,Flat"
    pq = make_choice("ivfpq", 100_000, 64, pq_m=16)
    assert pq.factory == f"IVF{default_nlist(100_000)},PQ16x8,Refine(SQ8)" and pq.params == {
        "k_factor_rf": 16
    }
    no_room = make_choice("ivfpq", 100_000, 64, pq_m=16, budget=3 << 20)
    assert "Refine" not in no_room.factory and "capped" in no_room.reason
    with pytest.raises(IndexChoiceError, match="unknown index type"):
        make_choice("lsh", 10, 8)
    with pytest.raises(IndexChoiceError, match="divisible"):
        make_choice("ivfpq", 10_000, 30, pq_m=16)
    with pytest.raises(IndexChoiceError, match="no vectors"):
        choose_index(0, 8, memory_budget=GB)


@pytest.mark.parametrize("name", list(INDEX_KINDS))
def test_every_kind_row_makes_a_faiss_index_that_matches_its_traits(name: str) -> None:
    """A row of the kinds table is all the other modules read: its factory string builds, its setup applies, its
    training flag agrees with FAISS, and its knob has values the tuner can set."""
    import faiss

    from uniretrieve.index.tune import set_param

    kind = INDEX_KINDS[name]
    choice = make_choice(name, 5000, 64, nlist=16, pq_m=16)
    assert choice.type == name and choice.needs_training == kind.trains
    index = faiss.index_factory(64, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if kind.setup is not None:
        kind.setup(index, 40)
    assert index.is_trained != kind.trains
    values = kind.knob.candidates(choice.nlist, 10)
    assert values == sorted(values) and (values == [0]) == kind.exact
    if kind.param:
        set_param(index, kind.param, values[-1])
