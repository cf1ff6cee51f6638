"""Which side of unime-tiny's embedding holds long-caption retrieval back: one MLLM side trained against the other
side of the recipe's pre-aligned dual encoder, frozen.

The recipe's pre-aligned dual encoder (`align/final`: the MLLM's own ViT and a 2-layer text tower, mean-pooled)
reads whole long captions at ~91 % R@1; the MLLM trained by stage 2 on the same scenes, both sides embedded through
the last token of an E5-V prompt, plateaus near half that. Here only one side is the MLLM: `--side text` embeds the
long captions with the MLLM (LoRA as stage 2, the Encoder's one embedding path) against the dual encoder's frozen
image embeddings, `--side image` the images against its frozen caption embeddings. A linear head (MLLM width →
the dual encoder's embed_dim, trained with the LoRA) maps the last-token state into the frozen space; the loss is
CLIP's symmetric InfoNCE with a learned logit scale clamped at 100, as the dual encoder was trained. R@1 both ways
among the first `--eval-scenes` held-out Urban1K-layout scenes (benchmarks/stage2_curve.py HeldOutScenes).

If the text side alone reaches the dual encoder's level, the causal last-token text embedding is not the limit; if
the image side alone does, neither is the image path; if both do, what holds stage 2 back is training both moving
sides at once.

With `--pool mean` the MLLM side is the mean of its final hidden states instead of the last token's (a diagnostic,
not UniME's embedding): if that closes the gap, the causal last-token summary is the limit, not the model's size.
With `--train full` every weight of the language model trains too, not only the LoRA (is the low-rank update the
limit?); `--reinit` draws the language model afresh (transformers' own initialisation) before training (is the
generative pretraining's starting point the limit?). Both are diagnostics, not the recipe.

    python -m benchmarks.one_side --recipe runs/unime-tiny --side text --steps 300 --json-out one_side_text.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from uniretrieve.tiny.cpu import bf16_supported, passive_omp_wait


def frozen_side(align: Path, side: str, captions: list[str], images: list[Any]) -> Any:
    """The dual encoder's unit embeddings of the side that stays frozen ([n, embed_dim] float32)."""
    import torch
    import torch.nn.functional as F

    from uniretrieve.tiny.clip_baseline import _pad_rows, _token_row
    from uniretrieve.tiny.dual_encoder import image_processor_for, load_dual_encoder

    model, tok, meta = load_dual_encoder(align)
    out = []
    with torch.no_grad():
        if side == "text":  # the MLLM embeds the captions: freeze the images
            proc = image_processor_for(meta["image_size"])
            for i in range(0, len(images), 256):
                px = proc(images=images[i : i + 256], return_tensors="pt")["pixel_values"]
                out.append(model.get_image_features(px))
        else:
            limit = meta["max_text_tokens"] or model.sizes.max_positions
            for i in range(0, len(captions), 64):
                rows = [_token_row(tok, c, limit) for c in captions[i : i + 64]]
                out.append(model.get_text_features(**_pad_rows(rows, tok.pad_token_id), chunks=4))
    return F.normalize(torch.cat(out).float(), dim=-1)


def mean_pooled(student: Any, inputs: Any) -> Any:
    """The diagnostic `--pool mean`: the language model's final hidden states averaged over every real position,
    instead of the last token's alone (what UniME and the Encoder use). Tells whether the causal last-token
    summary, rather than the language model's capacity, is what holds a long caption back."""
    import torch

    with student._autocast():
        hidden = student._base(**inputs, use_cache=False).last_hidden_state.float()
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def set_trainable(student: Any, train: str, *, reinit: bool = False) -> None:
    """The diagnostics' starting point and update: `reinit` draws the language model afresh (normal with the config's
    initializer_range, norms at one, biases zero: transformers' initialisation, by hand, since its `_init_weights`
    skips loaded weights); `train="full"` makes every language-model weight trainable beside the LoRA."""
    import torch

    lm_path = student.spec.language_model_path
    if reinit:
        std = student.base_model.config.get_text_config().initializer_range
        with torch.no_grad():
            for name, p in student.parameters_under([lm_path]):
                if "lora_" in name:
                    continue
                if p.dim() == 1:
                    torch.nn.init.ones_(p) if "norm" in name else torch.nn.init.zeros_(p)
                else:
                    torch.nn.init.normal_(p, 0.0, std)
    if train == "full":
        for _, p in student.parameters_under([lm_path]):
            p.requires_grad_(True)


def training_pairs(data: Path, n: int) -> tuple[list[str], list[Any]]:
    """The first n long-caption → image pairs of the training split (MMEB-train's Scene_LongCap_t2i), images at
    64 px as stage 2 loads them."""
    import pyarrow.parquet as pq
    from PIL import Image

    from uniretrieve.models.images import load_image

    root = data / "mmeb-train"
    t = pq.read_table(next((root / "Scene_LongCap_t2i").glob("*.parquet")), columns=["qry", "pos_image_path"])
    rows = t.slice(0, n).to_pylist()
    images = [load_image(root / r["pos_image_path"]).resize((64, 64), Image.Resampling.BICUBIC) for r in rows]
    return [r["qry"] for r in rows], images


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks.stage2_curve import HeldOutScenes
    from uniretrieve.eval.metrics import retrieval_recalls
    from uniretrieve.train.config import LoraConfig
    from uniretrieve.train.student import build_student
    from uniretrieve.types import Item

    torch.manual_seed(0)
    recipe = args.recipe
    captions, images = training_pairs(recipe / "data", args.pairs)
    held = HeldOutScenes(recipe / "data", args.eval_scenes)
    t0 = time.perf_counter()
    frozen = frozen_side(recipe / "align" / "final", args.side, captions, images)
    held_frozen = frozen_side(recipe / "align" / "final", args.side, held.texts, held.images)
    frozen_s = time.perf_counter() - t0
    student = build_student(
        str(args.model or recipe / "stage1" / "merged"),
        LoraConfig(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0, vision=True),
        device="cpu",
        precision="bf16-autocast" if bf16_supported() else "fp32",  # as the recipe: bf16 only where native
        prompt_regime="e5v",
        max_text_tokens=320,
    )
    set_trainable(student, args.train, reinit=args.reinit)
    head = torch.nn.Linear(student.dim, frozen.shape[1])
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    if args.head_from is not None:  # the caption-alignment head saved beside the model (tiny/align_text.py)
        from safetensors.torch import load_file

        from uniretrieve.tiny.align_text import HEAD_FILE

        state = load_file(str(args.head_from / HEAD_FILE))
        head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
        with torch.no_grad():
            logit_scale.copy_(state["log_scale"][0])
    params = [p for _, p in student.trainable_parameters()] + list(head.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = 10

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    def items(idx: list[int], texts: list[str], ims: list[Any]) -> list[Item]:
        return [Item(text=texts[i]) if args.side == "text" else Item(image=ims[i]) for i in idx]

    def embed(idx: list[int], texts: list[str], ims: list[Any]) -> torch.Tensor:
        inputs = student.prepare(items(idx, texts, ims)).inputs
        if args.pool == "last":  # the product's embedding (the Encoder's one path)
            return F.normalize(head(student.embed(inputs).float()), dim=-1)
        return F.normalize(head(mean_pooled(student, inputs)), dim=-1)

    def evaluate(step: int, train_s: float) -> dict[str, Any]:
        student.model.eval()
        with torch.no_grad():
            n = len(held.texts) if args.side == "text" else len(held.images)
            mine = torch.cat(
                [embed(list(range(i, min(n, i + 64))), held.texts, held.images) for i in range(0, n, 64)]
            )
        student.model.train()
        txt, img = (mine, held_frozen) if args.side == "text" else (held_frozen, mine)
        r = retrieval_recalls(txt.numpy(), img.numpy(), np.asarray(held.text_to_image), ks=(1,))
        row = {
            "step": step,
            "train_s": round(train_s, 1),
            **{f"{k}_r1": round(100 * v[1], 1) for k, v in r.items()},
        }
        print(f"curve: {row}", flush=True)
        return row

    curve = [evaluate(0, 0.0)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(captions))
    pos, train_s, losses = 0, 0.0, []
    for step in range(args.steps):
        t = time.perf_counter()
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(captions)), 0
        idx = order[pos : pos + args.batch].tolist()
        pos += args.batch
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_at(step)
        mine = embed(idx, captions, images)
        other = frozen[idx]
        logits = logit_scale.clamp(max=math.log(100)).exp() * mine @ other.T
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        train_s += time.perf_counter() - t
        if (step + 1) % 10 == 0:
            print(
                f"step {step + 1} loss {np.mean(losses[-10:]):.3f} {train_s / (step + 1):.2f} s/step",
                flush=True,
            )
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append({**evaluate(step + 1, train_s), "loss": round(float(np.mean(losses[-10:])), 3)})
    if args.save is not None:  # the MLLM with its trained side folded in (the head is not part of it)
        from uniretrieve.io import atomic_dir
        from uniretrieve.tiny.base import save_llava

        with atomic_dir(args.save) as tmp:
            save_llava(student.model.merge_and_unload(), student.processor, tmp, half=False)
    return {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "frozen_side_s": round(frozen_s, 1),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    passive_omp_wait()  # before torch loads (uniretrieve/tiny/cpu.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--recipe", type=Path, required=True, help="A recipe folder with data/, align/final, stage1/."
    )
    p.add_argument("--side", choices=("text", "image"), required=True, help="The side the MLLM embeds.")
    p.add_argument(
        "--model", type=Path, default=None, help="The MLLM to start from (default: RECIPE/stage1/merged)."
    )
    p.add_argument(
        "--pool",
        choices=("last", "mean"),
        default="last",
        help="The MLLM side's pooling: the last token (the product's) or, as a diagnostic, the mean of all.",
    )
    p.add_argument(
        "--train",
        choices=("lora", "full"),
        default="lora",
        help="lora: the LoRA alone trains (as stage 2); full: every language-model weight too (a diagnostic).",
    )
    p.add_argument(
        "--reinit", action="store_true", help="Draw the language model afresh before training (a diagnostic)."
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-scenes", type=int, default=500)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument(
        "--head-from",
        type=Path,
        default=None,
        help="Start the head from the caption-alignment head saved in this folder (e.g. MODEL): step 0 then "
        "measures the alignment the model kept.",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="Save the trained MLLM (LoRA merged) to this folder, e.g. as an init.",
    )
    args = p.parse_args(argv)
    out = run(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
