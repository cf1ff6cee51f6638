"""Stage 2's learning curve on the generated scenes: long-caption R@1 and attribute-swap accuracy at intervals.

Runs `uniretrieve train stage2` (train/stage2.py run_stage2, the same data, student, loss and loop) from a preset
and overrides, and every `--eval-every` steps embeds held-out scenes of the test split (seed 1, never trained on)
with the student as it is: the first `--eval-scenes` images and long captions of the Urban1K layout (R@1 both ways
among them, the evaluation's `retrieval_recalls`) and the SugarCrepe-style swap_att pairs of those images
(accuracy: the true caption scores above the swapped one). The curve shows where a recipe's stage 2 stands
at each step before the full evaluation of the model card.

    python -m benchmarks.stage2_curve --model runs/unime-tiny/stage1/merged --data runs/unime-tiny/data \\
        --work /tmp/s2 --eval-every 50 --set max_steps=300 --json-out s2.json

Training seconds exclude the interval evaluations (listed apart). `--score-only --model M [--adapter A]` scores one
model (e.g. a checkpoint's adapter on its start model) the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from uniretrieve.tiny.cpu import passive_omp_wait


class HeldOutScenes:
    """The first n Urban1K-layout pairs and their swap_att SugarCrepe rows, as Items (images loaded once)."""

    def __init__(self, data: Path, n: int) -> None:
        from uniretrieve.eval.datasets_longcap import load_urban1k
        from uniretrieve.models.images import load_image

        rs = load_urban1k(data / "urban1k")
        keep = [i for i, j in enumerate(rs.text_to_image) if j < n][:n]
        self.images = [load_image(Path(str(s.image_path))) for s in rs.images[:n]]
        self.texts = [str(rs.texts[i].text) for i in keep]
        self.text_to_image = [int(rs.text_to_image[i]) for i in keep]
        self.swaps = self._swaps(data, {Path(str(s.image_path)).stem: k for k, s in enumerate(rs.images[:n])})

    @staticmethod
    def _swaps(data: Path, index: dict[str, int]) -> list[tuple[int, str, str]]:
        rows = json.loads((data / "sugarcrepe" / "swap_att.json").read_text(encoding="utf-8"))
        out = []
        for r in rows.values():
            k = index.get(Path(r["filename"]).stem)
            if k is not None:
                out.append((k, r["caption"], r["negative_caption"]))
        return out

    def scores(self, student: Any) -> dict[str, float]:
        import numpy as np

        from uniretrieve.eval.metrics import retrieval_recalls
        from uniretrieve.types import Item

        was_training = student.model.training
        student.model.eval()
        img = student.encode([Item(image=im) for im in self.images], batch_size=64)
        txt = student.encode([Item(text=t) for t in self.texts], batch_size=32)
        pos = student.encode([Item(text=p) for _, p, _ in self.swaps], batch_size=64)
        neg = student.encode([Item(text=q) for _, _, q in self.swaps], batch_size=64)
        student.model.train(was_training)
        r = retrieval_recalls(txt, img, np.asarray(self.text_to_image), ks=(1,))
        which = np.asarray([k for k, _, _ in self.swaps])
        swap = float(((img[which] * pos).sum(1) > (img[which] * neg).sum(1)).mean())
        return {"t2i_r1": 100 * r["t2i"][1], "i2t_r1": 100 * r["i2t"][1], "swap_att": 100 * swap}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage2 import Stage2Config, run_stage2

    console = Console()
    cfg = load_config(
        Stage2Config,
        args.preset,
        list(args.set),
        model=str(args.model),
        output_dir=str(args.work),
        **{"data.root": str(args.data / "mmeb-train")},
    )
    held = HeldOutScenes(args.data, args.eval_scenes)
    curve: list[dict[str, Any]] = []
    clock = {"train": 0.0, "eval": 0.0, "t": time.perf_counter()}
    last: dict[str, float] = {}

    def evaluate(student: Any, step: int) -> None:
        now = time.perf_counter()
        clock["train"] += now - clock["t"]
        row = {"step": step, "train_s": round(clock["train"], 1), **last}
        row.update({k: round(v, 1) for k, v in held.scores(student).items()})
        clock["t"] = time.perf_counter()
        clock["eval"] += clock["t"] - now
        curve.append(row)
        console.print(f"curve: {row}")

    def wrap(step_fn: Any, student: Any) -> Any:
        def step(i: int, batch: list[int]) -> Any:
            if i % args.eval_every == 0:
                evaluate(student, i)
            out = step_fn(i, batch)
            last.update({k: round(float(out[k]), 4) for k in ("loss",) if k in out})
            return out

        return step

    result = run_stage2(cfg, console=console, wrap=wrap)
    from uniretrieve.models.encoder import Encoder

    evaluate(Encoder.from_pretrained(str(result.merged_dir or result.adapter_dir)), cfg.max_steps)
    return {
        "settings": {"model": str(args.model), "preset": args.preset, "set": list(args.set)},
        "eval_scenes": args.eval_scenes,
        "train_s": round(clock["train"], 1),
        "eval_s": round(clock["eval"], 1),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    passive_omp_wait()  # before torch loads (uniretrieve/tiny/cpu.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="The start model (a recipe's base or stage 1).")
    p.add_argument(
        "--score-only",
        action="store_true",
        help="Train nothing: score --model (with --adapter, e.g. a checkpoint's) on the held-out scenes.",
    )
    p.add_argument("--adapter", type=Path, default=None)
    p.add_argument("--data", type=Path, required=True, help="A generated corpus (train seed 0, test seed 1).")
    p.add_argument("--work", type=Path, default=None, help="The stage-2 run folder (required to train).")
    p.add_argument("--preset", default="stage2-tiny")
    p.add_argument("--set", action="append", default=[], help="A config override key=value (repeatable).")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-scenes", type=int, default=500)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.score_only:
        from uniretrieve import Encoder

        adapter = str(args.adapter) if args.adapter else None
        enc = Encoder.from_pretrained(str(args.model), adapter=adapter, max_text_tokens=512)
        out = {k: round(v, 1) for k, v in HeldOutScenes(args.data, args.eval_scenes).scores(enc).items()}
        print(json.dumps(out))
        return out
    if args.work is None:
        p.error("--work is required to train")
    out = run(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
