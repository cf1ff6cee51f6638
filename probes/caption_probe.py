"""Does a captioner learn to read its image? Short pretraining runs with the right-vs-shuffled-image caption loss.

    python -m probes.caption_probe --data runs/unime-tiny/data/llava-pretrain \
        --processor runs/unime-tiny/base/processor --steps 300 [--vision-init runs/unime-tiny/align/final]
        [--vit-lr 1e-3] [--which short|long|all]

Builds the tiny base (tiny/base.py), trains the projector and language model (and the ViT when --vit-lr > 0)
on the LLaVA-Pretrain rows, and every 50 steps prints the mean caption loss of 64 held-out short captions with
their own images and with the images shifted by one. Equal losses: the language model ignores the image. The
unime-tiny diagnostics in benchmarks/RESULTS.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch


def main() -> None:
    from transformers import AutoProcessor

    from uniretrieve.models.backbones import REGISTRY
    from uniretrieve.models.images import load_image
    from uniretrieve.tiny.base import TinyBaseConfig, build_base
    from uniretrieve.tiny.captions import caption_batch, caption_prompt
    from uniretrieve.tiny.pretrain import load_vision_tower
    from uniretrieve.tiny.pretrain_data import read_llava_pretrain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="LLaVA-Pretrain json or folder")
    ap.add_argument("--processor", required=True, help="the tiny base's processor folder (tokenizer)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vit-lr", type=float, default=0.0, help="> 0 trains the ViT too")
    ap.add_argument("--vision-init", default=None, help="a CLIP-style run's final/ (tiny/clip_baseline.py)")
    ap.add_argument("--which", choices=("short", "long", "all"), default="short")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    proc = AutoProcessor.from_pretrained(a.processor)
    rows = [
        e for e in read_llava_pretrain(a.data) if e.image is not None and not e.request.startswith("Summary")
    ]
    short = [e for e in rows if e.request == "Describe the image."]
    held = short[-64:]
    pool = {"short": short, "long": [e for e in rows if e.request != "Describe the image."], "all": rows}[
        a.which
    ]
    train = [e for e in pool if e not in set(held)]
    cache: dict[Path, object] = {}

    def img(p: Path) -> object:
        if p not in cache:
            cache[p] = load_image(p)
        return cache[p]

    model, _ = build_base(TinyBaseConfig(), proc.tokenizer)
    if a.vision_init:
        load_vision_tower(model, Path(a.vision_init))
    template = REGISTRY["llava"].wrapper_for("mistral", frozenset()).template
    vit = list(model.model.vision_tower.parameters())
    vit_ids = {id(p) for p in vit}
    groups = [{"params": [p for p in model.parameters() if id(p) not in vit_ids], "lr": a.lr}]
    if a.vit_lr > 0:
        groups.append({"params": vit, "lr": a.vit_lr})
    else:
        model.model.vision_tower.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    base_lrs = [g["lr"] for g in groups]

    def batch(ex: list, images: list) -> dict:
        prompts = [caption_prompt(template, "<image>", e.request) for e in ex]
        return caption_batch(proc, prompts, images, [e.caption for e in ex], max_length=256)

    def held_out() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            im = [img(e.image) for e in held]
            right = float(model(**batch(held, im)).loss)
            wrong = float(model(**batch(held, im[1:] + im[:1])).loss)
        model.train()
        return right, wrong

    t0 = time.time()
    for step in range(a.steps):
        for g, lr in zip(groups, base_lrs, strict=True):
            g["lr"] = lr * min(1.0, (step + 1) / 30)  # linear warm-up, then constant
        ex = rng.sample(train, a.batch_size)
        loss = model(**batch(ex, [img(e.image) for e in ex])).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            right, wrong = held_out()
            print(
                json.dumps(
                    {
                        "step": step + 1,
                        "train_loss": round(float(loss.detach()), 4),
                        "right_image": round(right, 4),
                        "shuffled_image": round(wrong, 4),
                        "seconds": round(time.time() - t0),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
