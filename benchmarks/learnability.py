"""The learnability gate: does a small dual encoder learn the recipe's task on this CPU in minutes?

A dual encoder without a token limit (tiny/dual_encoder.py: CNN image tower, transformer text tower over the
recipe's BPE tokenizer, InfoNCE, warm-up + cosine decay, a clamped logit scale) trains on the recipe's long
captions (generated scenes, train seed 0) through the one training loop, and is evaluated at intervals and at the
end on the 1,000 held-out scenes of the test split (seed 1) in the Urban1K and ShareGPT4V layouts: long-caption
R@1 in both directions among 1,000. The target: ≥ 80 % both ways within 10 minutes, and still there at the end.
It proves the data pipeline and the training loop before any MLLM is blamed.

    uniretrieve scenes generate -o DATA --seed 0 --test-seed 1
    python -m benchmarks.learnability --data DATA --work /tmp/gate --json-out gate.json

The JSON holds the learning curve (step, training seconds, R@1 per layout and direction, loss, logit scale), the
settings, the final scores and the machine. Training seconds exclude the interval evaluations (their seconds are
listed too).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from uniretrieve.tiny.cpu import passive_omp_wait

LAYOUTS = ("urban1k", "sharegpt4v")


def _held_out(data: Path, layout: str) -> Any:
    from uniretrieve.eval.datasets_longcap import load_sharegpt4v, load_urban1k

    return load_urban1k(data / "urban1k") if layout == "urban1k" else load_sharegpt4v(data / "sharegpt4v")


class HeldOut:
    """One layout's held-out pairs, preprocessed once; `recall(model)` → R@1 (%) both ways."""

    def __init__(
        self, data: Path, layout: str, tokenizer: Any, image_size: int, max_text_tokens: int
    ) -> None:
        from uniretrieve.tiny.clip_baseline import _token_row
        from uniretrieve.tiny.dual_encoder import image_processor_for
        from uniretrieve.tiny.pixels import PixelCache

        rs = _held_out(data, layout)
        self.layout, self.text_to_image, self.pad = layout, rs.text_to_image, tokenizer.pad_token_id
        self.pixels = PixelCache(image_processor_for(image_size))(
            [Path(str(s.image_path)) for s in rs.images]
        )
        self.rows = [_token_row(tokenizer, str(s.text), max_text_tokens) for s in rs.texts]

    def recall(self, model: Any, precision: str, batch: int = 250) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from uniretrieve.eval.metrics import retrieval_recalls
        from uniretrieve.tiny.clip_baseline import _pad_rows
        from uniretrieve.tiny.cpu import autocast

        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(precision == "bf16-autocast"):
            img = torch.cat(
                [
                    model.get_image_features(self.pixels[s : s + batch]).float()
                    for s in range(0, len(self.pixels), batch)
                ]
            )
            txt = torch.cat(
                [
                    model.get_text_features(**_pad_rows(self.rows[s : s + batch], self.pad)).float()
                    for s in range(0, len(self.rows), batch)
                ]
            )
        model.train(was_training)
        r = retrieval_recalls(
            F.normalize(txt, dim=-1).numpy(), F.normalize(img, dim=-1).numpy(), self.text_to_image, ks=(1, 5)
        )
        return {
            "t2i_r1": 100 * r["t2i"][1],
            "i2t_r1": 100 * r["i2t"][1],
            "t2i_r5": 100 * r["t2i"][5],
            "i2t_r5": 100 * r["i2t"][5],
        }


def run_gate(
    data: Path,
    work: Path,
    *,
    steps: int,
    eval_every: int,
    overrides: dict[str, Any] | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Train the gate encoder on `data` (a generated corpus with its test split) and return the curve and scores."""
    import shutil
    from dataclasses import asdict

    from rich.console import Console

    from uniretrieve.tiny.dual_encoder import DualEncoderConfig, DualEncoderSizes, train_dual_encoder
    from uniretrieve.tiny.pretrain import make_processor

    console = console or Console()
    t_setup = time.perf_counter()
    make_processor(data / "llava-pretrain", work / "tokenizer")
    overrides = dict(overrides or {})
    sizes = DualEncoderSizes(**overrides.pop("sizes", {}))
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = DualEncoderConfig(
        data=str(data / "llava-pretrain"),
        tokenizer=str(work / "tokenizer" / "processor"),
        output_dir=str(run),
        min_caption_words=40,
        max_steps=steps,
        sizes=sizes,
        **overrides,
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    limit = cfg.max_text_tokens or sizes.max_positions
    sets = [HeldOut(data, layout, tok, sizes.image_size, limit) for layout in LAYOUTS]
    setup_s = time.perf_counter() - t_setup
    curve: list[dict[str, Any]] = []
    clock = {"train": 0.0, "eval": 0.0, "t": time.perf_counter()}

    def evaluate(model: Any, step: int, metrics: dict[str, Any]) -> None:
        now = time.perf_counter()
        clock["train"] += now - clock["t"]
        row: dict[str, Any] = {"step": step, "train_s": round(clock["train"], 1), **metrics}
        for s in sets:
            row.update({f"{s.layout}_{k}": round(v, 1) for k, v in s.recall(model, cfg.precision).items()})
        clock["t"] = time.perf_counter()
        row["eval_s"] = round(clock["t"] - now, 1)
        clock["eval"] += row["eval_s"]
        curve.append(row)
        console.print(
            f"step {step}: {clock['train']:.0f} s  urban1k T→I {row['urban1k_t2i_r1']} I→T {row['urban1k_i2t_r1']}  "
            f"sharegpt4v T→I {row['sharegpt4v_t2i_r1']} I→T {row['sharegpt4v_i2t_r1']}"
        )

    holder: dict[str, Any] = {}

    def wrap(step_fn: Any, model: Any) -> Any:
        def step(i: int, batch: list[int]) -> Any:
            if i and i % eval_every == 0:
                evaluate(model, i, {"loss": holder.get("loss"), "logit_scale": holder.get("logit_scale")})
            out = step_fn(i, batch)
            holder["loss"] = round(float(out["loss"]), 4)
            holder["logit_scale"] = round(float(out["logit_scale"]), 2)
            return out

        return step

    clock["t"] = time.perf_counter()
    final, model = train_dual_encoder(cfg, console=console, wrap=wrap)
    evaluate(model, steps, {"loss": holder.get("loss"), "logit_scale": holder.get("logit_scale")})
    last = curve[-1]
    passed = all(last[f"{layout}_{d}_r1"] >= 80 for layout in LAYOUTS for d in ("t2i", "i2t"))
    return {
        "settings": {"steps": steps, "eval_every": eval_every, **asdict(cfg)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "setup_s": round(setup_s, 1),
        "train_s": round(clock["train"], 1),
        "eval_s": round(clock["eval"], 1),
        "curve": curve,
        "final": last,
        "gate_passed": passed and clock["train"] <= 600,
        "model_dir": str(final),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    passive_omp_wait()  # before torch loads (uniretrieve/tiny/cpu.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="A generated corpus (train seed 0, test seed 1).")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-tower", choices=("cnn", "vit"), default="cnn")
    p.add_argument("--vit-patch", type=int, default=8)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    result = run_gate(
        args.data,
        args.work,
        steps=args.steps,
        eval_every=args.eval_every,
        overrides={
            "batch_size": args.batch_size,
            "sizes": {
                "image_size": args.image_size,
                "image_tower": args.image_tower,
                "vit_patch": args.vit_patch,
            },
        },
    )
    result["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load": os.getloadavg(),
    }
    if args.json_out:
        from uniretrieve.io import atomic_write_json

        atomic_write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
