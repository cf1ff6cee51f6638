"""The encode-throughput report: the machine it ran on, and the per-preset tables printed by
`python -m benchmarks.encode_throughput` (the JSON form is the same report dict)."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped into a file or a log: do not squeeze the table into 80 columns
        console = Console(width=160)
    for rec in report["presets"]:
        table = Table(
            title=f"{rec['preset']} — {rec['about']} — {rec['parameters'] / 1e6:,.0f}M params, {rec['dtype']}, "
            f"attn={rec['attn_implementation']}"
        )
        cols = ["modality", "path", "items/s", "tokens/s", "× ref", "× ref (CPU s)", "s", "prep s", "fwd s"]
        for col in [*cols, "pad %", "min cos"]:
            table.add_column(col, justify="left" if col in ("modality", "path") else "right")
        show_mfu = any(r["mfu"] is not None for r in rec["runs"])
        if show_mfu:
            table.add_column("MFU", justify="right")
        for r in rec["runs"]:
            pad = 100 * (1 - r["tokens"] / r["padded_tokens"])
            cells = [
                r["modality"],
                r["path"],
                f"{r['items_per_s']:.2f}",
                f"{r['tokens_per_s']:,.0f}",
                f"[bold]{r['speedup_vs_reference']:.2f}×[/bold]",
                _fmt(r["cpu_speedup_vs_reference"], ".2f"),
                f"{r['seconds']:.2f}",
                _fmt(r["prep_seconds"], ".2f"),
                _fmt(r["forward_seconds"], ".2f"),
                f"{pad:.0f}",
                f"{r['min_cos_vs_reference']:.5f}",
            ]
            if show_mfu:
                cells.append(_fmt(None if r["mfu"] is None else 100 * r["mfu"], ".1f") + "%")
            table.add_row(*cells)
        console.print(table)
        for modality, f in rec.get("flops_per_item", {}).items():
            console.print(
                f"  {modality}: model FLOPs per item, reference {f['reference'] / 1e9:.2f} G, Encoder "
                f"{f['encoder'] / 1e9:.2f} G → {f['reference'] / f['encoder']:.2f}× from FLOPs saved; the rest of "
                "any speed-up is a higher FLOP rate (batching, precision)"
            )
        for r in rec["runs"]:
            if r["modality"] == "images" and r["prep_items_per_s"]:
                fwd = r["items"] / r["forward_seconds"]
                console.print(
                    f"  image preprocessing: {r['prep_items_per_s']:.1f} images/s per process; "
                    f"forward alone: {fwd:.1f} images/s → ≥ {fwd / r['prep_items_per_s']:.1f} workers keep it fed"
                )
    console.print(f"[dim]{report['date']} · {report['machine']['platform']} · {report['command']}[/dim]")
