"""Do a model's image neighbours share shapes and layout, or only colours?

On held-out generated scenes (the test split of `uniretrieve scenes generate`, a seed never trained on), each
scene is rendered a second time with new jitter — every object's offset and rotation redrawn within the generator's
ranges, and another image size — so the re-render shows the same content at slightly other pixels. Reported:

- re-render → original retrieval among all the originals: R@1 and R@5 (%), the same scene found again;
- for each original's top-5 image neighbours (itself excluded): the Jaccard overlap of its objects' shapes, colours,
  grid cells and (shape, colour) pairs with the query's, next to the same overlaps for random scene pairs. A model
  that sees only colour raises the colour overlap alone.

    python -m benchmarks.image_neighbours --data DATA --model unime-tiny --json-out neighbours.json

`--model` may also be a dual encoder's folder (the learnability gate's, or the recipe's `align/final`): its image
tower alone, to tell what the pre-aligned ViT sees from what the MLLM keeps.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from uniretrieve.tiny.cpu import passive_omp_wait

ASPECTS = {
    "shape": lambda o: o.shape,
    "colour": lambda o: o.colour,
    "cell": lambda o: o.cell,
    "shape+colour": lambda o: (o.shape, o.colour),
}


def rerender(scene: Any, rng: random.Random) -> Any:
    """The same objects with new jitter and rotation (the generator's ranges) at another of its image sizes."""
    from uniretrieve.scenes.spec import SamplerConfig

    cfg = SamplerConfig()
    objects = tuple(
        replace(
            o,
            dx=rng.uniform(-cfg.max_jitter, cfg.max_jitter),
            dy=rng.uniform(-cfg.max_jitter, cfg.max_jitter),
            rotation=rng.uniform(-cfg.max_rotation, cfg.max_rotation),
        )
        for o in scene.objects
    )
    size = rng.choice([s for s in cfg.image_sizes if s != scene.image_size] or [scene.image_size])
    return replace(scene, objects=objects, image_size=size)


def jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / max(len(a | b), 1)


def overlaps(scenes: list[Any], pairs: list[tuple[int, int]]) -> dict[str, float]:
    out = {}
    for name, key in ASPECTS.items():
        sets = [{key(o) for o in s.objects} for s in scenes]
        out[name] = round(100 * float(np.mean([jaccard(sets[i], sets[j]) for i, j in pairs])), 1)
    return out


def run(data: Path, model: str, n: int | None, k: int = 5, seed: int = 0) -> dict[str, Any]:
    from uniretrieve import Encoder
    from uniretrieve.scenes.render import render_scene
    from uniretrieve.scenes.spec import Scene

    lines = (data / "scenes" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    scenes = [Scene.from_dict(json.loads(line)) for line in lines][:n]
    rng = random.Random(seed)
    if (
        Path(model) / "clip_baseline.json"
    ).is_file():  # a dual encoder (the gate's, the recipe's pre-alignment)
        from uniretrieve.tiny.clip_baseline import ClipStyleEncoder

        encoder: Any = ClipStyleEncoder.from_pretrained(model)
    else:
        encoder = Encoder.from_pretrained(model)
    originals = encoder.encode_images([render_scene(s) for s in scenes], batch_size=64)
    again = encoder.encode_images([render_scene(rerender(s, rng)) for s in scenes], batch_size=64)
    sims = again @ originals.T
    rank = (sims > np.diag(sims)[:, None]).sum(1)  # 0: the original is the nearest
    self_sims = originals @ originals.T
    np.fill_diagonal(self_sims, -np.inf)
    top = np.argsort(-self_sims, axis=1)[:, :k]
    neighbour_pairs = [(i, int(j)) for i in range(len(scenes)) for j in top[i]]
    random_pairs = [
        (i, (i + rng.randrange(1, len(scenes))) % len(scenes)) for i in range(len(scenes)) for _ in range(k)
    ]
    return {
        "model": model,
        "scenes": len(scenes),
        "rerender_r1": round(100 * float((rank == 0).mean()), 1),
        "rerender_r5": round(100 * float((rank < 5).mean()), 1),
        f"top{k}_overlap": overlaps(scenes, neighbour_pairs),
        "random_overlap": overlaps(scenes, random_pairs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    passive_omp_wait()  # before torch loads (uniretrieve/tiny/cpu.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="A generated corpus (its scenes/test.jsonl).")
    p.add_argument("--model", default="unime-tiny")
    p.add_argument("-n", type=int, default=None, help="The first n test scenes (default: all).")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    out = run(args.data, args.model, args.n)
    print(json.dumps(out, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
