"""Stage-1 benchmark: does distillation make a tiny student's text similarities agree with the teacher's?

Measures, on held-out sentences, the Spearman correlation between the student's and the teacher's pairwise cosine
similarities (train/stage1_eval.py) before and after `uniretrieve train stage1`, with the packaged
all-MiniLM-L6-v2 as the teacher. Everything is generated or built here, offline:

* training data: the scene generator's SimCSE-format NLI file (seed 0); held-out sentences: the same generator with
  another seed (other scenes), all three columns;
* student: the `unime-tiny` architecture (tiny/base.py) with a tokenizer trained on the training sentences,
  untrained, unless --model names a checkpoint (e.g. a pretrained unime-tiny).

    python -m probes.stage1_agreement --out runs/bench-stage1 --steps 200

Writes <out>/result.json and prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def read_sentences(path: Path, max_rows: int) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:max_rows]
    return list(dict.fromkeys(t for r in rows for t in (r["sent0"], r["sent1"], r["hard_neg"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--model", default=None, help="student checkpoint; default: build an untrained unime-tiny"
    )
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--train-scenes", type=int, default=1500)
    ap.add_argument("--heldout-rows", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="stage-1 config override key=value"
    )
    args = ap.parse_args()

    from uniretrieve.scenes.generate import GenerateConfig, generate
    from uniretrieve.train.config import load_config
    from uniretrieve.train.stage1 import Stage1Config, run_stage1
    from uniretrieve.train.stage1_eval import teacher_agreement

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    generate(
        GenerateConfig(
            out=str(out / "train-data"),
            seed=args.seed,
            train_scenes=args.train_scenes,
            test_scenes=1,
            layouts=("nli",),
        )
    )
    generate(
        GenerateConfig(
            out=str(out / "heldout-data"),
            seed=args.seed + 1000,
            train_scenes=args.heldout_rows,
            test_scenes=1,
            layouts=("nli",),
        )
    )
    train_csv = out / "train-data" / "nli" / "nli_for_simcse.csv"
    heldout = read_sentences(out / "heldout-data" / "nli" / "nli_for_simcse.csv", args.heldout_rows)
    train_texts = set(read_sentences(train_csv, 10**9))
    heldout = [t for t in heldout if t not in train_texts]

    model = args.model
    if model is None:
        from uniretrieve.tiny.base import TinyBaseConfig, build_base, save_llava, train_tokenizer

        base_cfg = TinyBaseConfig(seed=args.seed)
        tok = train_tokenizer(sorted(train_texts), base_cfg)
        base, processor = build_base(base_cfg, tok)
        model = str(save_llava(base, processor, out / "student-base", half=False))

    cfg = load_config(
        Stage1Config,
        "stage1-tiny",
        [*args.sets, f"max_steps={args.steps}", "epochs=null"],
        model=model,
        output_dir=str(out / "stage1"),
        seed=args.seed,
        **{
            "data.path": str(train_csv),
            "teacher.cache_dir": str(out / "teacher-cache"),
            "checkpoint.merge": True,
        },
    )
    before = teacher_agreement(model, heldout, cfg.teacher, device="cpu")
    t0 = time.perf_counter()
    result = run_stage1(cfg)
    seconds = time.perf_counter() - t0
    assert result.merged_dir is not None
    after = teacher_agreement(result.merged_dir, heldout, cfg.teacher, device="cpu")
    rows = [json.loads(line) for line in (out / "stage1" / "metrics.jsonl").read_text().splitlines()]
    report = {
        "student": model,
        "teacher": cfg.teacher.model,
        "heldout_sentences": len(heldout),
        "train_rows": len(train_csv.read_text(encoding="utf-8").splitlines()) - 1,
        "steps": cfg.max_steps,
        "batch_size": cfg.batch_size,
        "train_seconds": round(seconds, 1),
        "kd_loss_first": rows[0]["loss"],
        "kd_loss_last10_mean": sum(r["loss"] for r in rows[-10:]) / len(rows[-10:]),
        "before": before,
        "after": after,
        "config": str(out / "stage1" / "config.yaml"),
    }
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(
        f"| {Path(model).name} ← all-MiniLM-L6-v2 | {len(heldout)} | {cfg.max_steps} × {cfg.batch_size} | "
        f"{before['spearman']:.3f} | {after['spearman']:.3f} | {before['top1_agreement']:.3f} | "
        f"{after['top1_agreement']:.3f} |"
    )


if __name__ == "__main__":
    main()
