"""Where does the built-in model lose an image's layout? Linear probes along its image path.

For generated scenes (a seed of its own, never trained on) the probe reads, at each stage of the MLLM's image path,
which colour and which shape sits in each of the 3×3 grid cells (11 and 9 classes: the vocabulary or "empty"), with
a ridge classifier trained on `--train` scenes and scored on `--test` others:

- `vit_select`: the ViT's patch tokens at `vision_feature_layer` (what the projector receives), concatenated;
- `vit_last`: the ViT's last-layer patch tokens, concatenated;
- `lm_image_tokens`: the language model's final hidden states at the image-token positions, concatenated;
- `vit_select_mean`, `lm_image_mean`: the same tokens averaged — what a last token that attends evenly to the
  image would read (concatenation tells a probe each token's place; an average keeps only what the tokens' own
  contents say about where they are);
- `embedding`: the image embedding itself (the last token's final hidden state, L2-normalised);
- `caption_embedding`: for comparison, the text side: the embedding of each scene's long caption (which names
  every object and its place).

A stage that scores near the majority baseline has lost what the one before it held.

    python -m benchmarks.layout_probe --model unime-tiny --json-out probe.json

`--model` may also be a dual encoder's folder (the learnability gate's, or the recipe's `align/final`): the same
stages of its image tower, to tell what the ViT sees at a resolution from what the MLLM keeps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.tiny.cpu import passive_omp_wait

CLASSES = {"colour": 11, "shape": 9, "colour_present": 2, "shape_present": 2}
"""Classes per target: 10 colours / 8 shapes + "empty" per cell; present or not per colour / shape."""


def targets(scenes: list[Any]) -> dict[str, np.ndarray]:
    """`[N, 9]` class ids per cell: colour / shape index, the last class meaning "no object here"; and, as the
    layout-free control, `[N, 10]` / `[N, 8]` 0/1: whether the scene holds that colour / shape anywhere (a bag of
    attributes)."""
    from uniretrieve.scenes.spec import COLOURS, SHAPES

    colours, shapes = list(COLOURS), list(SHAPES)
    colour = np.full((len(scenes), 9), len(colours), dtype=np.int64)
    shape = np.full((len(scenes), 9), len(shapes), dtype=np.int64)
    for i, s in enumerate(scenes):
        for o in s.objects:
            colour[i, o.cell] = colours.index(o.colour)
            shape[i, o.cell] = shapes.index(o.shape)
    colour_bag = np.stack([(colour == c).any(1) for c in range(len(colours))], 1).astype(np.int64)
    shape_bag = np.stack([(shape == c).any(1) for c in range(len(shapes))], 1).astype(np.int64)
    return {"colour": colour, "shape": shape, "colour_present": colour_bag, "shape_present": shape_bag}


def dual_features(
    model: str, images: list[Any], captions: list[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """The same stages of a dual encoder (the learnability gate's, the recipe's `align/final`): its ViT's patch
    tokens (layer -2, as the MLLM selects them, and the last), its image embedding and its caption embedding."""
    import torch

    from uniretrieve.tiny.clip_baseline import ClipStyleEncoder
    from uniretrieve.types import Item

    enc = ClipStyleEncoder.from_pretrained(model)
    vit = getattr(enc.model, "vit", None)
    out: dict[str, list[np.ndarray]] = {"vit_select": [], "vit_select_mean": [], "vit_last": []}
    with torch.inference_mode():
        for start in range(0, len(images) if vit is not None else 0, batch_size):
            pixels = enc.input_builder([Item(image=im) for im in images[start : start + batch_size]]).pixels
            hs = vit(pixel_values=pixels, output_hidden_states=True).hidden_states
            out["vit_select"].append(hs[-2][:, 1:].flatten(1).numpy())
            out["vit_select_mean"].append(hs[-2][:, 1:].mean(1).numpy())
            out["vit_last"].append(hs[-1][:, 1:].flatten(1).numpy())
    feats = {k: np.concatenate(v) for k, v in out.items() if v}
    feats["embedding"] = enc.encode_images(images)
    feats["caption_embedding"] = enc.encode_texts(captions)
    return feats


def features(
    model: str, images: list[Any], captions: list[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
    import torch

    from uniretrieve import Encoder
    from uniretrieve.types import Item

    enc = Encoder.from_pretrained(model)
    base = enc.base_model
    cfg = base.config
    tower = base.model.vision_tower
    image_token = cfg.image_token_id if hasattr(cfg, "image_token_id") else cfg.image_token_index
    names = ("vit_select", "vit_select_mean", "vit_last", "lm_image_tokens", "lm_image_mean", "embedding")
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    skip_cls = 1 if cfg.vision_feature_select_strategy == "default" else 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = enc.prepare([Item(image=im) for im in images[start : start + batch_size]]).inputs
            pixels = batch["pixel_values"].to(enc.dtype)
            hs = tower(pixels, output_hidden_states=True).hidden_states
            select = hs[cfg.vision_feature_layer][:, skip_cls:].float()
            out["vit_select"].append(select.flatten(1).numpy())
            out["vit_select_mean"].append(select.mean(1).numpy())
            out["vit_last"].append(hs[-1][:, skip_cls:].flatten(1).float().numpy())
            hidden = enc._base(**{**batch, "pixel_values": pixels}, use_cache=False).last_hidden_state
            mask = batch["input_ids"] == image_token
            n_img = int(mask[0].sum())
            image_hidden = hidden[mask].reshape(len(hidden), n_img, -1).float()
            out["lm_image_tokens"].append(image_hidden.flatten(1).numpy())
            out["lm_image_mean"].append(image_hidden.mean(1).numpy())
            out["embedding"].append(enc.embed(batch).numpy())  # the one embedding path
    feats = {k: np.concatenate(v) for k, v in out.items()}
    feats["caption_embedding"] = enc.encode_texts(captions, batch_size=32)
    return feats


def ridge_accuracy(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, classes: int
) -> float:
    """Mean accuracy over the target's columns (cells, or colours / shapes) of one ridge classifier per column
    (one-hot targets, standardised features); the penalty is chosen on the last fifth of the training scenes."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    n_fit = int(0.8 * len(x_tr))

    def fit_predict(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lam: float) -> np.ndarray:
        # dual form (features outnumber scenes): W = Xᵀ (X Xᵀ + λI)⁻¹ Y, every cell's one-hot targets at once
        onehot = np.eye(classes)[y].reshape(len(x), -1)  # [N, columns·C]
        prior = onehot.mean(0)  # the intercept: features are centred, targets are centred here
        coef = x.T @ np.linalg.solve(x @ x.T + lam * np.eye(len(x)), onehot - prior)
        return (prior + xq @ coef).reshape(len(xq), y.shape[1], classes).argmax(-1)

    best = max(
        (float((fit_predict(x_tr[:n_fit], y_tr[:n_fit], x_tr[n_fit:], lam) == y_tr[n_fit:]).mean()), lam)
        for lam in (1.0, 10.0, 100.0, 1000.0, 10000.0)
    )[1]
    return float((fit_predict(x_tr, y_tr, x_te, best) == y_te).mean())


def run(model: str, n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    import random

    from uniretrieve.scenes.captions import long_caption
    from uniretrieve.scenes.render import render_scene
    from uniretrieve.scenes.spec import sample_scenes

    scenes = sample_scenes(n_train + n_test, seed=seed, prefix="probe")
    rng = random.Random(seed)
    captions = [long_caption(s, rng) for s in scenes]
    dual = (Path(model) / "clip_baseline.json").is_file()
    feats = (dual_features if dual else features)(model, [render_scene(s) for s in scenes], captions)
    ys = targets(scenes)
    out: dict[str, Any] = {"model": model, "train": n_train, "test": n_test, "seed": seed, "accuracy": {}}
    for name, y in ys.items():
        classes = CLASSES[name]
        counts = np.stack([np.bincount(y[:n_train, c], minlength=classes) for c in range(y.shape[1])])
        majority = float((y[n_train:] == counts.argmax(1)).mean())
        row = {"majority": round(100 * majority, 1)}
        for stage, x in feats.items():
            acc = ridge_accuracy(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)
            row[stage] = round(100 * acc, 1)
        out["accuracy"][name] = row
        print(name, row, flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    passive_omp_wait()  # before torch loads (uniretrieve/tiny/cpu.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unime-tiny")
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    out = run(args.model, args.train, args.test, args.seed)
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
