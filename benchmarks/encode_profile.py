"""Where the Encoder's time goes on this machine, and what candidate speed-ups buy, each measured against a baseline
pass run right before it (adjacent passes share the machine's load, so their ratio is meaningful on a busy host).

    python -m benchmarks.encode_profile --quick                 # llava-100m, a few items
    python -m benchmarks.encode_profile --preset tiny --json

Variants (none changes uniretrieve itself; each patches a private copy of the loaded Encoder):
  threads=N        torch intra-op threads
  attn=eager       eager attention instead of SDPA
  bf16             bfloat16 weights and activations on the CPU (cosine to float32 reported)
  bs=N             text batch size (length bucketing granularity: padding share vs batching gain)
  tokens≤N         batches closed at N padded tokens (up to 64 texts), instead of a fixed count
  vision-trim      drop the vision layers after `vision_feature_layer` (their output is never used)
  compile          torch.compile of the base forward (first-call compile time reported separately)
The op-level profile of one baseline pass (torch.profiler) shows which kernels the forward spends its time in.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


def _trim_vision(enc: Any) -> bool:
    """Make the CLIP layers past `vision_feature_layer` pass their input through (LLaVA reads layer -2, so the
    last layer's output is never used). The layers stay in place, so transformers' hidden-state capture still
    sees every layer and the selected one is unchanged."""
    layer = enc.model.config.vision_feature_layer
    tower = getattr(enc.model.model, "vision_tower", None)
    tower = getattr(tower, "vision_model", tower)  # transformers 4 nests the CLIP body one level deeper
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    if not isinstance(layer, int) or layer >= -1 or layers is None:
        return False
    for unused in list(layers)[layer + 1 :]:
        unused.forward = lambda hidden_states, *args, **kwargs: hidden_states
    return True


def token_budget_batches(enc: Any, max_tokens: int) -> Callable[[Sequence[Any], int], Iterator[list[int]]]:
    """A batching rule to compare with `Encoder.batches`: longest first, a batch closes when its padded size
    (items × longest prompt, in tokens) would pass `max_tokens`, so long texts go in small batches and short
    ones in large batches (at most `batch_size`)."""

    def batches(items: Sequence[Any], batch_size: int) -> Iterator[list[int]]:
        lengths = [
            len(enc.input_builder.tokenizer(enc.input_builder.prompt(it)[0])["input_ids"]) for it in items
        ]
        order = sorted(range(len(items)), key=lambda i: -lengths[i])
        batch: list[int] = []
        for i in order:
            if (batch and (len(batch) + 1) * lengths[batch[0]] > max_tokens) or len(batch) == batch_size:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    return batches


def _op_profile(enc: Any, items: list[Any], batch_size: int, top: int = 8) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    batches = [enc.input_builder([items[i] for i in idx]) for idx in enc.batches(items, batch_size)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            enc.forward(b)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops[:top]]


@app.command()
def main(
    preset: Annotated[str, typer.Option(help="CPU preset to profile.")] = "llava-100m",
    quick: Annotated[bool, typer.Option(help="Few items.")] = False,
    threads: Annotated[int, typer.Option(help="Baseline torch intra-op threads.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Baseline Encoder batch size.")] = 16,
    compile_model: Annotated[bool, typer.Option("--compile/--no-compile", help="Try torch.compile.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Reuse built checkpoints and images here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    import copy

    import torch

    from benchmarks.encode_inputs import load_items
    from benchmarks.encoder_runs import run_in_process
    from benchmarks.model_configs import PRESETS, cached_checkpoint
    from uniretrieve.models.encoder import Encoder

    p = PRESETS[preset]
    n_img, n_txt = (8, 32) if quick else (32, 128)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="uniretrieve-prof-") as tmp:
        cache = cache_dir or Path(tmp)
        ckpt = str(cached_checkpoint(p, cache, "cpu"))
        images, texts = load_items(p, cache, n_img, n_txt, 0)
        base = Encoder.from_pretrained(ckpt, device="cpu")
        data = {"images": images, "texts": texts}

        def timed(enc: Any, modality: str, bs: int = batch_size) -> Any:
            return run_in_process(enc, data[modality], modality=modality, batch_size=bs)

        for m in data:  # warm-up
            run_in_process(base, data[m][:batch_size], modality=m, batch_size=batch_size)
        rows: list[dict[str, Any]] = []
        profile = {m: timed(base, m) for m in data}
        for m, r in profile.items():
            rows.append(
                {
                    "variant": "baseline",
                    "modality": m,
                    "prep_share": r.prep_seconds / r.seconds,
                    "pad_share": 1 - r.tokens / r.padded_tokens,
                    "seconds": r.seconds,
                }
            )

        def compare(
            label: str, modality: str, make: Callable[[], tuple[Any, int]], undo: Callable[[], None]
        ) -> None:
            ref = timed(base, modality)
            enc, bs = make()
            run = timed(enc, modality, bs)
            undo()
            cos = float((ref.embeddings * run.embeddings).sum(axis=1).min())
            rows.append(
                {
                    "variant": label,
                    "modality": modality,
                    "speedup": ref.seconds / run.seconds,
                    "cpu_speedup": ref.cpu_seconds / run.cpu_seconds,
                    "min_cos": cos,
                    "pad_share": 1 - run.tokens / run.padded_tokens,
                    "seconds": run.seconds,
                    "baseline_seconds": ref.seconds,
                }
            )

        def noop() -> None:
            return None

        other = 2 if threads == 1 else 1
        for m in data:
            compare(
                f"threads={other}",
                m,
                lambda: (torch.set_num_threads(other), (base, batch_size))[1],
                lambda: torch.set_num_threads(threads),
            )
        variants: dict[str, Any] = {
            "attn=eager": Encoder.from_pretrained(ckpt, device="cpu", attn_implementation="eager"),
            "bf16": Encoder.from_pretrained(ckpt, device="cpu", dtype=torch.bfloat16),
        }
        for label, enc in variants.items():
            for m in data:
                compare(label, m, lambda enc=enc: (enc, batch_size), noop)
        del variants
        trimmed = copy.deepcopy(base)
        if _trim_vision(trimmed):
            compare("vision-trim", "images", lambda: (trimmed, batch_size), noop)
        for bs in (4, 8, 32):
            compare(f"bs={bs}", "texts", lambda bs=bs: (base, bs), noop)
        for budget in (1024, 2048):
            budgeted = copy.copy(base)
            budgeted.batches = token_budget_batches(base, budget)  # type: ignore[method-assign]
            compare(f"tokens≤{budget}", "texts", lambda b=budgeted: (b, 64), noop)
        if compile_model:
            compiled = Encoder.from_pretrained(ckpt, device="cpu")
            compiled._base = torch.compile(compiled._base, dynamic=True)
            for m in data:
                t0 = time.perf_counter()
                run_in_process(compiled, data[m][:batch_size], modality=m, batch_size=batch_size)
                rows.append(
                    {"variant": "compile (first call)", "modality": m, "seconds": time.perf_counter() - t0}
                )
                compare("compile", m, lambda: (compiled, batch_size), noop)
        ops = {m: _op_profile(base, data[m], batch_size) for m in data}
    report = {
        "preset": preset,
        "threads": threads,
        "batch_size": batch_size,
        "rows": rows,
        "ops": ops,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    t = Table(title=f"Encoder profile — {preset}, threads={threads}, batch {batch_size}")
    for c in (
        "variant",
        "modality",
        "× baseline",
        "× baseline (CPU s)",
        "min cos",
        "pad %",
        "prep %",
        "s",
        "baseline s",
    ):
        t.add_column(c, justify="left" if c in ("variant", "modality") else "right")
    for r in rows:

        def f(key: str, spec: str, scale: float = 1.0, r: dict[str, Any] = r) -> str:
            return "—" if r.get(key) is None else format(r[key] * scale, spec)

        t.add_row(
            r["variant"],
            r["modality"],
            f("speedup", ".2f"),
            f("cpu_speedup", ".2f"),
            f("min_cos", ".5f"),
            f("pad_share", ".0f", 100),
            f("prep_share", ".1f", 100),
            f("seconds", ".2f"),
            f("baseline_seconds", ".2f"),
        )
    console.print(t)
    for m, top in ops.items():
        console.print(
            f"[bold]{m}[/bold] forward, top ops by self CPU time: "
            + ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in top)
        )


if __name__ == "__main__":
    app()
