"""`uniretrieve encode --engine ray`: the encode loop of pipeline.py run as a Ray Data pipeline.

    driver: corpus → listing → plan → work batches (one streaming pass, batches.py) ─┐
    Ray Data: rows (one per model batch) ─ map: decode + preprocess (CPU tasks) ─ map: Encoder.forward (an actor
    pool, one GPU per actor on a GPU cluster) ─┘
    driver: a chunk's batches back together ─ ShardWriter (writer.py) ─ manifest (commit.py): one owner

The driver plans exactly as the local engine does (same plan, same chunks, same shard numbers), so shards are named
by input range and the manifest is written by the driver alone. Ray Data restarts a killed actor and retries its
task (`max_restarts` / `max_task_retries` -1 for actor pools); the driver keeps the first result of each
(chunk, batch) and commits a chunk once all its batches are in, so a retry can neither duplicate nor drop rows. A
killed driver loses only uncommitted chunks: the same command resumes as with the local engine. Design and sources:
docs/scaling.md#ray.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniretrieve.embed.config import EncodeConfig

PREPARE_MEMORY = 256 << 20
"""Bytes reserved per decode task (a batch of decoded images and their processor tensors)."""
BATCHES_PER_BLOCK = 4
LOCAL_DESCRIBE_BYTES = 2 << 30
"""Checkpoints up to this size are described by loading them in the driver (on the CPU) rather than in a Ray task."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MAX_BLOCKS = 20_000
"""Ray Data blocks of work at most (each is one object in Ray's store)."""
RAY_MISSING = 'the Ray engine needs Ray: pip install "uniretrieve[ray]"'


class RayUnavailableError(RuntimeError):
    """Ray is not installed (the CLI prints the one line)."""


def connect(address: str | None) -> Any:
    """`ray`, initialised: the cluster at `address` (e.g. ray://head:10001 or auto), else a local instance."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(RAY_MISSING) from None
    if not ray.is_initialized():
        # Ray Data logs progress and advice to the terminal; the encode prints its own summary
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,  # workers' own logs stay in Ray's session folder, not on our stdout
            logging_level="ERROR",
            configure_logging=True,
        )
    return ray


@dataclass
class EncoderFacts:
    """What the driver needs of the encoder (its description and the CPU side: prompts and processor), measured
    where the model loads — in the cluster — so the driver never holds the weights."""

    description: dict[str, Any]
    dtype: str
    prompt_regime: str
    max_text_tokens: int | None
    spec: Any
    """The backbone's registry row (`max_image_batch` ...)."""
    input_builder: Any

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


def _facts(config: EncodeConfig) -> EncoderFacts:
    from uniretrieve.embed.prepare import load_encoder

    enc = load_encoder(config, rank=0)
    return EncoderFacts(
        enc.describe(),
        str(enc.dtype),
        enc.prompt_regime,
        enc.max_text_tokens,
        enc.spec,
        enc.input_builder,
    )


def encoder_facts(config: EncodeConfig) -> EncoderFacts:
    """The encoder's facts: a checkpoint of at most LOCAL_DESCRIBE_BYTES is loaded here, on the CPU, in the compute
    dtype the actors will use (the dtype is part of the shards' settings); a larger one once in the cluster (one
    task with an actor's resources), so the driver never holds big weights. The local load saves a worker's start-up
    (measured: 7.4 s for the task vs 0.2 s here, unime-tiny on 2 cores)."""
    ray = connect(config.ray_address)
    gpus, _ = _actor_resources(ray, config)
    if checkpoint_bytes(config) <= LOCAL_DESCRIBE_BYTES:
        dtype = config.model_dtype or (
            "bfloat16" if gpus else None
        )  # resolve_dtype's default on the actors' device
        return _facts(replace(config, device="cpu", model_dtype=dtype))
    return ray.get(ray.remote(num_gpus=gpus, max_retries=2)(_facts).remote(config))


def checkpoint_bytes(config: EncodeConfig) -> float:
    """Bytes of the model's (and adapter's) weight files; infinite when they are not local files (a hub id)."""
    from uniretrieve.models.loading import resolve_source

    total = 0.0
    for where in (resolve_source(config.model), config.adapter):
        if where is None:
            continue
        path = Path(where).expanduser()
        if not path.is_dir():
            return float("inf")
        total += sum(f.stat().st_size for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES and f.is_file())
    return total


def _actor_resources(ray: Any, config: EncodeConfig) -> tuple[float, float]:
    """(GPUs, CPUs) per actor: one GPU each on a GPU cluster; on CPUs an even share of all but one CPU, which is
    left to the decode and preprocessing tasks (else they could never be scheduled beside the actors)."""
    res = ray.cluster_resources()
    if res.get("GPU", 0) >= 1 and config.device != "cpu":
        return 1.0, 1.0
    cpus = float(res.get("CPU", os.cpu_count() or 1))
    return 0.0, max(0.25, (cpus - 1) / actor_count(ray, config))


def actor_count(ray: Any, config: EncodeConfig) -> int:
    """--actors, else one per GPU of the cluster, else one."""
    if config.actors:
        return config.actors
    return max(1, int(ray.cluster_resources().get("GPU", 0))) if config.device != "cpu" else 1


def prepare_row(row: dict[str, Any], prepare: Any) -> dict[str, Any]:
    """Ray Data map (a CPU task): a row's work batch → its decoded, preprocessed `LoadedBatch` (`prepare`: a
    `PrepareBatch`, as DataLoader workers run it)."""
    loaded = prepare(pickle.loads(row["work"]))
    return {"key": row["key"], "loaded": pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL)}


class EmbedActor:
    """Ray Data map (actor pool): loads the encoder once, embeds each prepared batch. Its settings are class
    attributes of a subclass made per run (`configured`), not constructor arguments: Ray keeps those in the object
    store, where a restarted actor could miss them (and says so on stderr)."""

    config: EncodeConfig
    threads: int = 0

    def __init__(self) -> None:
        import torch

        from uniretrieve.embed.prepare import load_encoder

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        self.enc = load_encoder(self.config, rank=0)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        loaded = pickle.loads(row["loaded"])
        vectors = None if loaded.prepared is None else self.enc.forward(loaded.prepared).numpy()
        # the tensors stay here: the driver needs rows, errors, truncation counts and vectors
        if loaded.prepared is not None:
            loaded.prepared = SimpleNamespace(truncated=loaded.prepared.truncated)
        return {
            "key": row["key"],
            "loaded": pickle.dumps((loaded, vectors), protocol=pickle.HIGHEST_PROTOCOL),
        }


def ray_embed_stream(
    config: EncodeConfig, facts: EncoderFacts, work: list[Any], *, actor: type = EmbedActor
) -> Any:
    """(LoadedBatch, vectors) for every work batch, each exactly once, in any order (`work` is fully listed by the
    driver first: records are text and paths, ~100 bytes a row). `actor`: the embedding class (tests inject
    faults through a subclass)."""
    ray = connect(config.ray_address)
    import ray.data as rd

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = rd.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n_actors = actor_count(ray, config)
    gpus, cpus = _actor_resources(ray, config)
    rows = [{"key": i, "work": pickle.dumps(w, protocol=pickle.HIGHEST_PROTOCOL)} for i, w in enumerate(work)]
    # a block per model batch (up to MAX_BLOCKS): results come back, and chunks commit, all through the run
    # rather than in a few bursts (measured: 8 blocks for 125 batches returned them in 8 bursts)
    ds = rd.from_items(rows, override_num_blocks=max(1, min(-(-len(rows) // BATCHES_PER_BLOCK), MAX_BLOCKS)))
    from uniretrieve.embed.batches import PrepareBatch

    # a memory reservation for a batch of decoded images; it also keeps Ray Data from fusing these CPU tasks into
    # the actors (ops fuse only when their resource requests match), so decoding overlaps embedding
    ds = ds.map(
        prepare_row,
        fn_kwargs={"prepare": PrepareBatch(facts.input_builder)},
        num_cpus=0.5,
        memory=PREPARE_MEMORY,
    )
    # torch threads per CPU actor: the cluster's CPUs shared by the actors (the decode tasks' reservation above is
    # scheduling accounting; they run on the same cores between batches). One actor on 2 cores: 2 threads, as the
    # plain path; two actors: 1 each (the benchmark's setting)
    threads = 0 if gpus else max(1, round(float(ray.cluster_resources().get("CPU", 1)) / n_actors))
    ds = ds.map(
        type(actor.__name__, (actor,), {"config": config, "threads": threads}),
        compute=rd.ActorPoolStrategy(size=n_actors),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    seen: set[int] = set()
    for row in ds.iter_rows():
        key = int(row["key"])
        if key in seen:  # a retried task's second answer
            continue
        seen.add(key)
        yield key, *pickle.loads(row["loaded"])
    if len(seen) != len(rows):
        raise RuntimeError(f"the Ray pipeline returned {len(seen)} of {len(rows)} batches; re-run to resume")


def chunk_ordered(
    config: EncodeConfig, facts: EncoderFacts, stream: Any, *, actor: type = EmbedActor
) -> Iterator[tuple[Any, Any]]:
    """(LoadedBatch, vectors) of every work batch of `stream`, embedded through Ray and given back grouped by chunk:
    a chunk's batches in their planned order (its last one flagged `last`, as the local engine gives them), each
    chunk as soon as all of its batches are back."""
    work = list(stream)
    per_chunk: dict[int, list[int]] = {}
    for i, w in enumerate(work):
        per_chunk.setdefault(w.chunk, []).append(i)
    got: dict[int, tuple[Any, Any]] = {}
    for key, loaded, vectors in ray_embed_stream(config, facts, work, actor=actor):
        got[key] = (loaded, vectors)
        keys = per_chunk[loaded.chunk]
        if all(k in got for k in keys):
            for k in keys:
                yield got.pop(k)


def shutdown() -> None:
    """Stop a local Ray instance this process started (tests, one-shot CLI runs)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


__all__ = [
    "RAY_MISSING",
    "EmbedActor",
    "EncoderFacts",
    "chunk_ordered",
    "connect",
    "encoder_facts",
    "shutdown",
]
