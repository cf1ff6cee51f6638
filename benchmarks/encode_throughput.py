"""Encode throughput: uniretrieve's `Encoder` against the official reference loop, same model, inputs and machine.

    python -m benchmarks.encode_throughput --quick              # CPU: tiny + llava-100m, a few items
    python -m benchmarks.encode_throughput                      # CPU, full item counts
    python -m benchmarks.encode_throughput --device cuda        # GPU presets (7B-class, bf16) with MFU
    python -m benchmarks.encode_throughput --quick --json       # machine-readable
    python -m benchmarks.encode_throughput --quick --shrink --preset qwen2-vl-2b   # a GPU preset's data path on CPU

For each preset it builds a random-weight checkpoint of a real architecture (benchmarks/model_configs.py), writes
JPEG files and caption texts (benchmarks/encode_inputs.py), then times, per modality (images, texts):
  reference   — the official loop (benchmarks/reference_loop.py): batch 1 for images, 3 for texts, one loading
                worker, full causal-LM forward with output_hidden_states=True, hidden_states[-1][:, -1];
  encoder     — `Encoder.encode`'s loop in-process (length-bucketed batches, base forward, no LM head), with the
                processor and the forward timed apart: the profile of where Encoder time goes;
  encoder+Nw  — the same batches built by N DataLoader workers from `enc.input_builder`;
  encoder bf16 — (--bf16) the in-process loop with the model in bfloat16: a precision change, opt-in in the Encoder,
                so it is reported beside the fp32 paths, never as the default.
Below each table: model FLOPs per item of the reference and of the Encoder (counted by torch's FlopCounterMode on
the first items). Their ratio is what an exact implementation gains by doing less work: the Encoder already skips
the LM head, the only work the reference does that an embedding never needs; anything beyond comes from running the
same FLOPs at a higher rate (larger batches, lower precision).
Every path's embeddings are compared with the reference's (cosine per item); the command exits 1 when any is
below --min-cos. Only ratios measured within one run are comparable on a shared machine.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from benchmarks.model_configs import Preset

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

QUICK_COUNTS = {"cpu": (8, 32), "cuda": (32, 128)}
FULL_COUNTS = {"cpu": (32, 128), "cuda": (256, 1024)}


def _min_cos(ref: Any, ours: Any) -> float:
    return float((ref * ours).sum(axis=1).min())


def bench_preset(
    preset: Preset,
    *,
    device: str,
    cache: Path,
    n_images: int,
    n_texts: int,
    batch_size: int,
    workers: int,
    ref_text_batch: int,
    repeats: int,
    mfu: bool,
    attn: str | None,
    seed: int,
    bf16: bool = False,
) -> dict[str, Any]:
    """All timed runs of one preset; returns a JSON-able record (embeddings dropped)."""
    import dataclasses

    import torch

    from benchmarks.encode_inputs import load_items
    from benchmarks.encoder_runs import count_flops, encoder_flops, run_in_process, run_with_workers
    from benchmarks.model_configs import cached_checkpoint, parameter_count
    from benchmarks.reference_loop import run_reference
    from benchmarks.timing import RunResult, matmul_rate
    from uniretrieve.models.encoder import Encoder

    name = preset.name
    dtype = getattr(torch, preset.dtype)
    enc = Encoder.from_pretrained(
        str(cached_checkpoint(preset, cache, device)), device=device, dtype=dtype, attn_implementation=attn
    )
    enc16 = (
        Encoder.from_pretrained(
            str(cached_checkpoint(preset, cache, device)),
            device=device,
            dtype=torch.bfloat16,
            attn_implementation=attn,
        )
        if bf16
        else None
    )
    images, texts = load_items(preset, cache, n_images, n_texts, seed)
    record: dict[str, Any] = {
        "preset": name,
        "about": preset.about,
        "parameters": parameter_count(preset),
        "dtype": preset.dtype,
        "attn_implementation": enc.model.config._attn_implementation,
        "runs": [],
        "flops_per_item": {},
    }
    peak = matmul_rate(enc.device, dtype) if mfu else None
    record["matmul_flops_per_s"] = peak
    for modality, items, ref_bs in (("images", images, 1), ("texts", texts, ref_text_batch)):
        if not items:
            continue
        prompts = [enc.input_builder.prompt(it)[0] for it in items]
        pics = [it.image for it in items] if modality == "images" else None

        def reference(
            k: int | None = None, prompts=prompts, pics=pics, bs=ref_bs, modality=modality
        ) -> RunResult:
            return run_reference(
                enc.model,
                enc.processor,
                prompts=prompts[:k],
                images=pics[:k] if pics else None,
                modality=modality,
                batch_size=bs,
                device=enc.device,
                dtype=dtype,
                images_nested=enc.spec.images_nested,
            )

        # Warm-up (untimed): first-call allocations, kernel selection, lazy imports in both paths.
        reference(1)
        run_in_process(enc, items[:batch_size], modality=modality, batch_size=batch_size)
        if enc16 is not None:
            run_in_process(enc16, items[:batch_size], modality=modality, batch_size=batch_size)
        n_count = min(len(items), 8)
        record["flops_per_item"][modality] = {
            "reference": count_flops(lambda n=n_count, f=reference: f(n)) / n_count,
            "encoder": encoder_flops(enc, items[:n_count], batch_size=batch_size) / n_count,
        }
        best: dict[str, RunResult] = {}
        # Interleaved repeats, so machine-load drift hits every path alike; each path keeps its best pass.
        for _ in range(repeats):
            runs = [reference(), run_in_process(enc, items, modality=modality, batch_size=batch_size)]
            if workers > 0:
                runs.append(
                    run_with_workers(enc, items, modality=modality, batch_size=batch_size, workers=workers)
                )
            if enc16 is not None:
                r16 = run_in_process(enc16, items, modality=modality, batch_size=batch_size)
                runs.append(dataclasses.replace(r16, path="encoder bf16"))
            for r in runs:
                if r.path not in best or r.seconds < best[r.path].seconds:
                    best[r.path] = r
        flops = encoder_flops(enc, items, batch_size=batch_size) if mfu else None
        ref = best["reference"]
        for r in best.values():
            row = {
                "modality": modality,
                "path": r.path,
                "items": r.items,
                "tokens": r.tokens,
                "padded_tokens": r.padded_tokens,
                "seconds": r.seconds,
                "items_per_s": r.items_per_s,
                "tokens_per_s": r.tokens_per_s,
                "speedup_vs_reference": ref.seconds / r.seconds,
                "cpu_seconds": r.cpu_seconds,
                "cpu_speedup_vs_reference": ref.cpu_seconds / r.cpu_seconds
                if device == "cpu" and r.cpu_seconds and ref.cpu_seconds
                else None,
                "min_cos_vs_reference": _min_cos(ref.embeddings, r.embeddings),
                "prep_seconds": r.prep_seconds,
                "forward_seconds": r.forward_seconds,
                "prep_items_per_s": r.items / r.prep_seconds if r.prep_seconds else None,
                "model_flops": flops,
                "mfu": flops / r.seconds / peak if flops and peak else None,
            }
            if r.tokens != ref.tokens:
                raise RuntimeError(
                    f"{name} {modality}: {r.path} consumed {r.tokens} tokens, reference {ref.tokens}"
                )
            record["runs"].append(row)
    return record


@app.command()
def main(
    device: Annotated[
        str, typer.Option(help="cpu (tiny, llava-100m) or cuda (7B-class presets, bf16).")
    ] = "cpu",
    preset: Annotated[
        list[str] | None, typer.Option(help="Preset(s) to run; default: all for the device.")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Few items, one repeat: a short run on a busy machine.")
    ] = False,
    images: Annotated[
        int | None, typer.Option(help="Number of images (overrides the default count).")
    ] = None,
    texts: Annotated[int | None, typer.Option(help="Number of texts (overrides the default count).")] = None,
    batch_size: Annotated[int, typer.Option(help="Encoder batch size.")] = 16,
    workers: Annotated[
        int | None, typer.Option(help="Preprocessing workers of the encoder+Nw path (0 skips it).")
    ] = None,
    ref_text_batch: Annotated[
        int, typer.Option(help="Reference text batch (official: 3 × image batch).")
    ] = 3,
    repeats: Annotated[int | None, typer.Option(help="Timed passes per path; the fastest counts.")] = None,
    mfu: Annotated[
        bool | None, typer.Option(help="Count model FLOPs and report MFU (default: on for cuda).")
    ] = None,
    attn: Annotated[
        str | None, typer.Option(help="attn_implementation to load with (sdpa, eager, ...).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads of the main process.")] = None,
    min_cos: Annotated[
        float, typer.Option(help="Fail when an embedding's cosine to the reference is lower.")
    ] = 0.999,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Keep built checkpoints and images here (default: a temp dir).")
    ] = None,
    shrink: Annotated[
        bool,
        typer.Option(
            help="Cut the presets to 1–2 small layers (same processors, image geometry, vocabulary)."
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of tables.")
    ] = False,
    bf16: Annotated[
        bool, typer.Option(help="Add the Encoder in bfloat16 as an extra path (a precision change, opt-in).")
    ] = False,
    seed: int = 0,
) -> None:
    import torch

    from benchmarks.encode_report import machine_info, print_tables
    from benchmarks.model_configs import PRESETS, presets_for, shrunk

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda: no CUDA device is visible to torch")
    names = preset or presets_for(device)
    for n in names:
        if n not in PRESETS:
            raise typer.BadParameter(f"unknown preset {n!r}; choose from {', '.join(PRESETS)}")
        if PRESETS[n].device != device and not shrink:
            raise typer.BadParameter(
                f"preset {n!r} is meant for --device {PRESETS[n].device}; add --shrink to run its data path on a "
                "few small layers instead"
            )
    chosen = [shrunk(PRESETS[n]) if shrink else PRESETS[n] for n in names]
    if threads:
        torch.set_num_threads(threads)
    n_img, n_txt = (QUICK_COUNTS if quick else FULL_COUNTS)[device]
    n_img, n_txt = images if images is not None else n_img, texts if texts is not None else n_txt
    workers = (
        workers if workers is not None else (min(8, (os.cpu_count() or 2) // 2) if device == "cuda" else 1)
    )
    repeats = repeats or (1 if quick else 3)
    mfu = (device == "cuda") if mfu is None else mfu

    with tempfile.TemporaryDirectory(prefix="uniretrieve-bench-") as tmp:
        cache = cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        records = []
        for p in chosen:
            records.append(
                bench_preset(
                    p,
                    device=device,
                    cache=cache,
                    n_images=n_img,
                    n_texts=n_txt,
                    batch_size=batch_size,
                    workers=workers,
                    ref_text_batch=ref_text_batch,
                    repeats=repeats,
                    mfu=mfu,
                    attn=attn,
                    seed=seed,
                    bf16=bf16,
                )
            )
            gc.collect()  # the next 7B model must not share the GPU with this one's leftovers
            if device == "cuda":
                torch.cuda.empty_cache()
    report = {
        "benchmark": "encode_throughput",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python -m benchmarks.encode_throughput", *sys.argv[1:]]),
        "machine": machine_info(device),
        "settings": {
            "images": n_img,
            "texts": n_txt,
            "batch_size": batch_size,
            "workers": workers,
            "ref_text_batch": ref_text_batch,
            "repeats": repeats,
            "min_cos": min_cos,
        },
        "presets": records,
    }
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_tables(report)
    worst = min((r["min_cos_vs_reference"] for rec in records for r in rec["runs"]), default=1.0)
    if worst < min_cos:
        typer.echo(
            f"FAIL: an embedding differs from the reference (cosine {worst:.5f} < {min_cos})", err=True
        )
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
