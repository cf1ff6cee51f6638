"""Checkpoints: atomic save/load of everything an exact resume needs, the final adapter, and the merged export.

Layout of one resumable checkpoint (`<output_dir>/checkpoints/step-000100/`):

    adapter/ or model/    the trained weights (train/trainable.py): peft LoRA weights + adapter_config.json, or a
                          full-parameter run's model.safetensors (float32 master weights: a resume is exact)
    optimizer.pt          AdamW state
    scheduler.pt          learning-rate schedule state
    rng-rank{r}.pt        torch CPU/CUDA, Python and NumPy RNG states of rank r (dropout continues identically)

The .pt files hold only tensors and plain values and are read with `torch.load(weights_only=True)`: a resume never
unpickles arbitrary objects, so a crafted file is refused instead of running code.
    config.yaml           the resolved training config
    trainer_state.json    step, data position, last metrics; written last: a directory without it is incomplete

A checkpoint is built in a hidden temporary directory next to its final name and renamed into place
(`uniretrieve.io.atomic_dir`), so a crash never leaves a half-written `step-*` behind. Under torchrun all ranks write into the same directory (a shared
filesystem is assumed, as for any multi-node checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniretrieve.io import atomic_dir, atomic_path, atomic_write_json, job_temp_path
from uniretrieve.train import distributed
from uniretrieve.train.config import save_config

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTER = "adapter"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the run; the message says what to do."""


# --------------------------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------------------------


def torch_save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# --------------------------------------------------------------------------------------------------------------
# RNG
# --------------------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values (NumPy's key array as a tensor), loadable with weights_only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, Mapping):
        n = (n["name"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(
        n
    )  # else a tuple holding a NumPy array: a checkpoint written before the tensor format
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def legacy_rng_globals() -> list[Any]:
    """What an RNG file of a checkpoint written before the tensor format needs besides tensors: NumPy's uint32 key
    array (array, dtype and their rebuild function; data only, nothing that runs code)."""
    core = getattr(np, "_core", None) or np.core
    return [np.ndarray, np.dtype, core.multiarray._reconstruct, np.dtypes.UInt32DType]


def load_state_file(path: Path, map_location: Any = None, *, allow: list[Any] | None = None) -> Any:
    """A checkpoint .pt file read with `weights_only=True`: tensors and plain containers (plus the data-only types
    in `allow`), never code."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete")
    try:
        with torch.serialization.safe_globals(allow or []):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values and is not loaded (unpickling it could "
            "run code); resume from a checkpoint this version wrote, or start a new run"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(
            f"{path} is not a readable checkpoint file ({e}); the checkpoint is damaged"
        ) from e


# --------------------------------------------------------------------------------------------------------------
# Adapter
# --------------------------------------------------------------------------------------------------------------


def _write_adapter(student: Any, path: Path) -> None:
    student.model.save_pretrained(str(path))


def save_adapter(student: Any, path: Path, config: Any | None = None) -> Path:
    """The trained LoRA adapter (peft format) plus the resolved config, atomically. Rank 0 only."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        _write_adapter(student, tmp)
        if config is not None:
            save_config(config, tmp / "config.yaml")
    return path


def load_adapter_weights(student: Any, adapter_dir: Path) -> None:
    """Load saved LoRA weights into the (already LoRA-wrapped) student, in place, exactly."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    f = Path(adapter_dir) / "adapter_model.safetensors"
    if not f.is_file():
        raise CheckpointError(
            f"{adapter_dir} holds no adapter_model.safetensors; the checkpoint is incomplete"
        )
    result = set_peft_model_state_dict(student.model, load_file(str(f), device=str(student.device)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(
            f"{f} has weights the current LoRA layout lacks ({unexpected[:3]} ...); the checkpoint was made with "
            "other lora settings"
        )


# --------------------------------------------------------------------------------------------------------------
# Resumable checkpoints
# --------------------------------------------------------------------------------------------------------------


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(
    output_dir: Path,
    *,
    trainable: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    position: Mapping[str, int],
    config: Any,
    metrics: Mapping[str, float],
) -> Path:
    """Write `checkpoints/step-XXXXXX` after optimizer step `step` (1-based count of completed steps).

    Collective under torchrun: every rank must call it (each writes its RNG state; rank 0 writes the rest).
    """
    final = checkpoint_dir(output_dir, step)
    main = distributed.is_main()
    # rank 0 owns the temp directory (creates it, swaps it in); every rank writes into it under the shared name
    with atomic_dir(final) if main else contextlib.nullcontext(job_temp_path(final)) as tmp:
        distributed.barrier()
        torch_save_atomic(rng_state(), tmp / f"rng-rank{distributed.rank()}.pt")
        if main:
            trainable.save(tmp / trainable.weights_dir)
            torch_save_atomic(optimizer.state_dict(), tmp / "optimizer.pt")
            torch_save_atomic(scheduler.state_dict(), tmp / "scheduler.pt")
            save_config(config, tmp / "config.yaml")
        distributed.barrier()
        if main:
            state = {
                "step": step,
                "position": dict(position),
                "world_size": distributed.world_size(),
                "metrics": dict(metrics),
            }
            atomic_write_json(tmp / STATE_FILE, state, indent=2)
    distributed.barrier()
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under `output_dir`, or None."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    f = Path(ckpt) / STATE_FILE
    if not f.is_file():
        raise CheckpointError(
            f"{ckpt} is not a complete checkpoint (no {STATE_FILE}); pick another step-* dir"
        )
    return json.loads(f.read_text())


def load_checkpoint(
    ckpt: Path, *, trainable: Any, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore the weights (a `train.trainable.Trainable`), optimizer, scheduler and this rank's RNG; returns the
    trainer state."""
    ckpt = Path(ckpt)
    state = read_trainer_state(ckpt)
    if state.get("world_size", 1) != distributed.world_size():
        raise CheckpointError(
            f"{ckpt} was written by {state.get('world_size')} processes, this run has {distributed.world_size()}; "
            "resume with the same number of processes (the per-rank RNG streams and data slices depend on it)"
        )
    # read the state files before changing anything, so a refused file leaves the run untouched
    optim_state = load_state_file(ckpt / "optimizer.pt", map_location=trainable.device)
    sched_state = load_state_file(ckpt / "scheduler.pt")
    rng = load_state_file(ckpt / f"rng-rank{distributed.rank()}.pt", allow=legacy_rng_globals())
    trainable.load(ckpt / trainable.weights_dir)
    optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(sched_state)
    set_rng_state(rng)
    return state


def prune_checkpoints(output_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the `keep_last` newest complete checkpoints (0 keeps all), and any incomplete one older than
    the newest complete (what a kill during an earlier prune leaves); returns what was deleted."""
    if keep_last <= 0:
        return []
    root = Path(output_dir) / CHECKPOINTS
    steps = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    done = [p for p in steps if (p / STATE_FILE).is_file()]
    newest = int(done[-1].name.split("-")[1]) if done else -1
    partial = [p for p in steps if p not in done and int(p.name.split("-")[1]) < newest]
    doomed = done[:-keep_last] + partial
    for p in doomed:
        shutil.rmtree(p)
    return doomed


# --------------------------------------------------------------------------------------------------------------
# Merged export
# --------------------------------------------------------------------------------------------------------------


def save_merged(
    base: str,
    adapter_dir: Path,
    out_dir: Path,
    *,
    dtype: torch.dtype | str = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """A full MLLM checkpoint (weights + processor) with the adapter folded in, loadable by `Encoder.from_pretrained`.

    The base is loaded fresh from `base` on the CPU, so the vision tower and projector are exactly the base's
    (stage 1 never changes them; "restored at inference", UniME paper §3.2; docs/method.md#stage-1). dtype
    "auto" keeps the checkpoint's own dtype.
    """
    from uniretrieve.models.loading import load_backbone

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    loaded = load_backbone(
        base,
        device=torch.device("cpu"),
        dtype=dtype,  # type: ignore[arg-type]
        adapter=str(adapter_dir),
        trust_remote_code=trust_remote_code,
    )
    with atomic_dir(out_dir) as tmp:
        loaded.model.save_pretrained(str(tmp))
        loaded.processor.save_pretrained(str(tmp))
        cfg = Path(adapter_dir) / "config.yaml"
        if cfg.is_file():
            shutil.copy2(cfg, tmp / "config.yaml")
        provenance = {"base": base, "base_source": loaded.source, "adapter": str(Path(adapter_dir).resolve())}
        atomic_write_json(tmp / "uniretrieve-merge.json", provenance, indent=2)
    return out_dir
