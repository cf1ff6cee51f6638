"""Before the encode loop: the encoder and the spec of its vectors, the process group, and the segment to run.

`prepare_segment` runs under the output directory's lock: it creates or checks the manifest, then joins the open
segment (a resumed run) or plans a new one from the listing; `encode_corpus` (pipeline.py) runs the chunks it
assigns to this rank.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniretrieve.data.corpus import Corpus
from uniretrieve.embed.config import CONFIG_NAME, EncodeConfig, default_shard_rows
from uniretrieve.embed.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    SegmentInfo,
    check_compatible,
    read_manifest,
    write_manifest,
)
from uniretrieve.embed.plan import Listing, compute_plan, new_segment, plan_sha256
from uniretrieve.embed.repair import reconcile
from uniretrieve.embed.schema import EmbeddingSpec
from uniretrieve.embed.writer import ERRORS_NAME, SHARD_PREFIX
from uniretrieve.io import is_stale_temp, remove_stale_temps

if TYPE_CHECKING:
    from uniretrieve.models.encoder import Encoder

log = logging.getLogger("uniretrieve.encode")


def make_spec(enc: Encoder, config: EncodeConfig) -> EmbeddingSpec:
    """Everything that must match for vectors to be mixed: the model's description plus the corpus columns."""
    d = enc.describe()
    extra = {
        "chat_wrapper": d.get("chat_wrapper"),
        "max_text_tokens": d.get("max_text_tokens"),
        "pooling": d.get("pooling"),
        "compute_dtype": str(getattr(enc, "dtype", "")).replace("torch.", ""),
        **config.corpus_settings(),
    }
    return EmbeddingSpec(
        dim=int(d["dim"]),
        dtype=config.dtype,
        model_id=str(d["model_id"]),
        weight_hash=str(d["weight_hash"]),
        family=str(d["family"]),
        prompt_regime=str(d["prompt_regime"]),
        instruction=config.instruction,
        normalized=True,
        extra=extra,
    )


def check_encoder_matches(enc: Encoder, config: EncodeConfig) -> None:
    """A caller-supplied encoder must agree with the config that is saved next to the shards."""
    wrong = []
    if enc.prompt_regime != config.prompt_regime:
        wrong.append(f"prompt_regime {enc.prompt_regime!r} vs {config.prompt_regime!r}")
    if config.max_text_tokens is not None and enc.max_text_tokens != config.max_text_tokens:
        wrong.append(f"max_text_tokens {enc.max_text_tokens} vs {config.max_text_tokens}")
    if wrong:
        raise ValueError("the encoder passed in disagrees with the config: " + "; ".join(wrong))


def load_encoder(config: EncodeConfig, rank: int) -> Encoder:
    from uniretrieve.models.device import resolve_device
    from uniretrieve.models.encoder import Encoder

    return Encoder.from_pretrained(
        config.model,
        device=resolve_device(config.device, rank=rank),
        dtype=config.model_dtype,
        adapter=config.adapter,
        prompt_regime=config.prompt_regime,
        max_text_tokens=config.max_text_tokens,
        trust_remote_code=config.trust_remote_code,
    )


def init_distributed(world: int) -> Any:
    """Join torchrun's process group when launched by it (for barriers only; ranks coordinate via the manifest)."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    import torch.distributed as tdist

    if not tdist.is_initialized():
        import torch

        tdist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return tdist


def barrier(dist: Any) -> None:
    if dist is not None:
        dist.barrier()


def clear_directory(root: Path) -> None:
    """--overwrite: remove what an encode run wrote (shards, manifest, errors, config, temps); nothing else."""
    for p in root.iterdir():
        ours = (
            (p.name.startswith(SHARD_PREFIX) and p.name.endswith(".parquet"))
            or p.name in (MANIFEST_NAME, ERRORS_NAME, CONFIG_NAME)
            or is_stale_temp(p)
        )
        if ours and p.is_file():
            p.unlink()


def prepare_segment(
    root: Path,
    spec: EmbeddingSpec,
    config: EncodeConfig,
    corpus: Corpus,
    enc: Encoder,
    listing: Listing,
    world: int,
) -> tuple[Manifest, SegmentInfo | None, np.ndarray, list[str]]:
    """Under the directory lock: check settings and the shards, then join the open segment or open a new one (None:
    nothing to do). Also returns the damaged shards found (their rows are in the plan again)."""
    remove_stale_temps(root)
    manifest = read_manifest(root)
    repaired: list[str] = []
    if manifest is None:
        strays = sorted(p.name for p in root.glob(f"{SHARD_PREFIX}*.parquet"))
        if strays:
            raise ManifestError(
                f"{root} holds shards ({strays[0]} …) but no {MANIFEST_NAME}; it was not written by this tool or "
                "the manifest was lost. Use another directory, or --overwrite to replace them"
            )
        manifest = Manifest.new(spec, model=enc.describe(), input=corpus.describe())
        write_manifest(root, manifest)
    else:
        check_compatible(manifest, spec, root=root)
        repaired = reconcile(root, manifest, checksums=True if config.verify else None)
    changed = False
    open_seg = next((s for s in manifest.segments if not s.complete), None)
    if open_seg is not None:
        plan = compute_plan(listing, root, manifest, open_seg.index)
        if open_seg.listing_sha256 == listing.sha256 and open_seg.counts.get("plan_sha256") == plan_sha256(
            plan
        ):
            return manifest, open_seg, plan, repaired
        # the input changed while this segment was unfinished: keep its finished shards, plan the rest anew
        log.warning(
            "input changed since the unfinished run %d; keeping its shards and planning again", open_seg.index
        )
        open_seg.complete = True
        open_seg.counts["abandoned"] = True
        changed = True
    plan = compute_plan(listing, root, manifest, len(manifest.segments))
    if len(plan) == 0:
        if changed or not manifest.complete:
            manifest.complete = all(s.complete for s in manifest.segments)
            write_manifest(root, manifest)
        return manifest, None, plan, repaired
    shard_rows = config.shard_rows or default_shard_rows(spec.dim, spec.dtype)
    segment = new_segment(manifest, listing, plan, shard_rows, world)
    segment.config = config.to_dict()
    manifest.segments.append(segment)
    manifest.complete = False
    manifest.input = corpus.describe()
    write_manifest(root, manifest)
    return manifest, segment, plan, repaired
