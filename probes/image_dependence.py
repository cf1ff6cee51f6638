"""Does a captioning MLLM use its image? Caption loss with the right image vs with the images shuffled by one.

    python -m probes.image_dependence --model runs/unime-tiny/base/final --data data/scenes/llava-pretrain

Equal losses mean the language model ignores the image (the unime-tiny blocker, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from uniretrieve.models.backbones import REGISTRY
    from uniretrieve.models.images import load_image
    from uniretrieve.tiny.captions import caption_batch, caption_prompt
    from uniretrieve.tiny.pretrain_data import read_llava_pretrain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="LLaVA-Pretrain json or folder")
    ap.add_argument("-n", type=int, default=16)
    args = ap.parse_args()
    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(args.model)
    wrapper = REGISTRY["llava"].wrapper_for("mistral", frozenset())
    ex = [e for e in read_llava_pretrain(args.data, limit=8 * args.n) if e.request == "Describe the image."][
        : args.n
    ]
    prompts = [caption_prompt(wrapper.template, "<image>", e.request) for e in ex]
    images, captions = [load_image(e.image) for e in ex], [e.caption for e in ex]
    with torch.no_grad():
        right = model(**caption_batch(proc, prompts, images, captions, max_length=200)).loss
        wrong = model(**caption_batch(proc, prompts, images[1:] + images[:1], captions, max_length=200)).loss
    print(
        f"caption loss, right image {float(right):.4f}, shuffled image {float(wrong):.4f} ({len(ex)} captions)"
    )


if __name__ == "__main__":
    main()
