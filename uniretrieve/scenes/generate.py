"""One entry point that writes the whole generated corpus: `generate(GenerateConfig(...))`.

Data flow: sample the test split, then the train split excluding every test scene's content (spec.sample_scenes)
→ captions / negatives / tasks per scene, each from its own random stream `scene_rng(seed, purpose, scene_id)` (so a
scene's texts do not depend on how many scenes are generated) → layout writers (layouts.py). The resolved config
and the written counts go to OUT/config.json last, as the completion marker. Re-running with the same config
rewrites nothing (files already holding the right bytes are left alone); a different config for an existing
folder is refused.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniretrieve._version import __version__
from uniretrieve.scenes import layouts
from uniretrieve.scenes.captions import (
    PARAPHRASE_STYLES,
    long_caption,
    paraphrase,
    short_captions,
    summary_answer,
)
from uniretrieve.scenes.config import LAYOUTS, GenerateConfig
from uniretrieve.scenes.files import sync_all, write_text
from uniretrieve.scenes.negatives import CATEGORIES, hard_negative, perturbed_scene
from uniretrieve.scenes.spec import Scene, sample_scenes, scene_rng
from uniretrieve.scenes.tasks import (
    TASKS,
    TRAIN_ONLY_TASKS,
    TaskExample,
    classification,
    compose_example,
    eval_candidates,
    grounding,
    image_to_text,
    long_caption_examples,
    text_to_image,
    vqa_colour,
    vqa_count,
    vqa_relation,
)

CONFIG_FILE = "config.json"
PENDING_FILE = ".generating.json"
"""Written first, removed after config.json: marks an unfinished run and which config it was."""


@dataclass
class GenerateResult:
    out: Path
    counts: dict[str, Any]
    skipped: bool
    """True when OUT already held this exact corpus (config.json matched) and nothing was rewritten."""


def split_scenes(cfg: GenerateConfig) -> tuple[list[Scene], list[Scene]]:
    """(test, train): the test split first, then train scenes that repeat no test scene's content."""
    test_seed = cfg.seed if cfg.test_seed is None else cfg.test_seed
    test = sample_scenes(cfg.test_scenes, seed=test_seed, prefix="test", config=cfg.sampler)
    train = sample_scenes(
        cfg.train_scenes,
        seed=cfg.seed,
        prefix="train",
        config=cfg.sampler,
        exclude={s.signature() for s in test},
    )
    return test, train


def _rng(cfg: GenerateConfig, purpose: str, scene: Scene) -> random.Random:
    seed = cfg.test_seed if cfg.test_seed is not None and scene.scene_id.startswith("test") else cfg.seed
    return scene_rng(seed, purpose, scene.scene_id)


def retrieval_caption(cfg: GenerateConfig, scene: Scene) -> tuple[str, str]:
    """(caption, false caption) for the t2i / i2t tasks. The caption names every object's attributes, so distractor
    scenes with other content cannot fit it; the false one is the same wording of a minimally changed scene."""
    rng = _rng(cfg, "retrieval-caption", scene)
    style, seed = rng.randrange(len(PARAPHRASE_STYLES)), rng.random()
    caption = paraphrase(scene, style, random.Random(seed))
    return caption, paraphrase(perturbed_scene(scene, rng), style, random.Random(seed))


def train_only_examples(cfg: GenerateConfig, scene: Scene) -> list[TaskExample]:
    """The TRAIN_ONLY_TASKS rows of a training scene: its long caption in either long layout's wording, both ways
    (the false caption: the same random choices for a minimally changed scene), and one compositional caption with
    a SugarCrepe-style false edit of a category drawn at random (one row per scene, so no two rows of a batch share
    an image)."""
    rng = _rng(cfg, "long-retrieval", scene)
    variant, seed = rng.randrange(2), rng.random()
    caption = long_caption(scene, random.Random(seed), variant=variant)
    false_caption = long_caption(perturbed_scene(scene, rng), random.Random(seed), variant=variant)
    out = long_caption_examples(scene, caption, false_caption)
    rng = _rng(cfg, "compose", scene)
    for category in rng.sample(CATEGORIES, len(CATEGORIES)):
        hn = hard_negative(scene, category, rng)
        if hn is not None:
            out.append(compose_example(scene, hn.caption, hn.negative_caption))
            break
    return out


def task_examples(cfg: GenerateConfig, scene: Scene) -> list[TaskExample]:
    """One example of every task that applies to `scene`."""
    rng = _rng(cfg, "tasks", scene)
    caption, false_caption = retrieval_caption(cfg, scene)
    out = [classification(scene, rng), vqa_count(scene, rng), vqa_colour(scene, rng)]
    rel = vqa_relation(scene, rng)
    if rel is not None:
        out.append(rel)
    out += [
        text_to_image(scene, caption),
        image_to_text(scene, caption, false_caption),
        grounding(scene, rng),
    ]
    return out


def _identity(cfg: GenerateConfig) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "version": __version__}


def _check_existing(out: Path, cfg: GenerateConfig) -> bool:
    """True when OUT already holds this exact corpus; raises when it holds a different one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file; give a folder to write the corpus into")
    path = out / CONFIG_FILE
    if not path.is_file():
        # Resuming an interrupted run of the same config is fine; mixing with other content is not.
        pending = out / PENDING_FILE
        if pending.is_file() and json.loads(pending.read_text(encoding="utf-8")) != _identity(cfg):
            raise ValueError(
                f"{out} holds an unfinished corpus of another configuration (see {pending}); choose a new --output "
                "folder or delete the old one"
            )
        known = {*LAYOUTS, "scenes", PENDING_FILE}
        foreign = sorted(p.name for p in out.iterdir() if p.name not in known) if out.is_dir() else []
        if foreign:
            raise ValueError(
                f"{out} is not empty and holds no generated corpus ({', '.join(foreign[:5])} …); choose a new or "
                "empty --output folder"
            )
        return False
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it to regenerate into {out}") from exc
    if {k: existing.get(k) for k in ("config", "version")} != _identity(cfg):
        raise ValueError(
            f"{out} already holds a generated corpus with another configuration (see {path}); "
            "choose a new --output folder or delete the old one"
        )
    return True


def _summary_entries(scene: Scene, rng: random.Random) -> list[tuple[str, str | None, str, str]]:
    """E5-V's one-word summary as a pretraining task: the image, and a short caption of it (text only), each answered
    with the colour and shape of an object they show or name. The last prompt token must then predict content, as
    E5-V's prompt relies on (a web-scale LLM learns that elsewhere; this base learns it here)."""
    picks = rng.sample(scene.objects, min(2, len(scene.objects)))
    out: list[tuple[str, str | None, str, str]] = [
        (
            f"{scene.scene_id}-summary-{j}",
            scene.scene_id,
            layouts.SUMMARY_IMAGE_REQUEST,
            f"{o.colour} {o.shape}",
        )
        for j, o in enumerate(picks)
    ]
    caption = short_captions(scene, rng, 1)[0]
    answer = summary_answer(caption)
    if answer is not None:
        request = layouts.SUMMARY_TEXT_REQUEST.format(text=caption)
        out.append((f"{scene.scene_id}-text-summary", None, request, answer))
    return out


def generate(cfg: GenerateConfig, log: Callable[[str], None] = lambda _m: None) -> GenerateResult:
    """Write every layout in `cfg.layouts` under `cfg.out` (see the module docstring)."""
    out = Path(cfg.out)
    if _check_existing(out, cfg):
        manifest = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
        return GenerateResult(out, manifest["counts"], skipped=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PENDING_FILE, json.dumps(_identity(cfg), sort_keys=True) + "\n")
    test, train = split_scenes(cfg)
    log(f"sampled {len(test)} test and {len(train)} train scenes")
    counts: dict[str, Any] = {
        "scenes_test": layouts.write_scenes(out / "scenes" / "test.jsonl", test),
        "scenes_train": layouts.write_scenes(out / "scenes" / "train.jsonl", train),
    }
    want = set(cfg.layouts)
    test_images = layouts.ImageStore(test)

    if "short" in want:
        caps = {
            s.scene_id: short_captions(s, _rng(cfg, "short", s), cfg.short_captions_per_image) for s in test
        }
        counts["short"] = layouts.write_short(out / "short", test, caps, test_images)
        log(f"short: {counts['short']} images × {cfg.short_captions_per_image} captions")
    if "sharegpt4v" in want:
        long0 = {s.scene_id: long_caption(s, _rng(cfg, "long0", s), variant=0) for s in test}
        counts["sharegpt4v"] = layouts.write_sharegpt4v(out / "sharegpt4v", test, long0, test_images)
        log(f"sharegpt4v: {counts['sharegpt4v']} long captions")
    if "urban1k" in want:
        long1 = {s.scene_id: long_caption(s, _rng(cfg, "long1", s), variant=1) for s in test}
        counts["urban1k"] = layouts.write_urban1k(out / "urban1k", test, long1, test_images)
        log(f"urban1k: {counts['urban1k']} long captions")
    if "sugarcrepe" in want:
        items: dict[str, list[tuple[str, str, str]]] = {c: [] for c in CATEGORIES}
        for s in test:
            for c in CATEGORIES:
                hn = hard_negative(s, c, _rng(cfg, f"sugarcrepe/{c}", s))
                if hn is not None:
                    items[c].append((s.scene_id, hn.caption, hn.negative_caption))
        counts["sugarcrepe"] = layouts.write_sugarcrepe(out / "sugarcrepe", items, test_images)
        log(f"sugarcrepe: {counts['sugarcrepe']}")
    if "mmeb-eval" in want:
        counts["mmeb-eval"] = _write_mmeb_eval(cfg, out / "mmeb-eval", test, test_images)
        log(f"mmeb-eval: {counts['mmeb-eval']}")

    train_images = layouts.ImageStore(train)
    if "mmeb-train" in want:
        rows: dict[str, list[TaskExample]] = {t: [] for t in (*TASKS, *TRAIN_ONLY_TASKS)}
        for s in train:
            for ex in (*task_examples(cfg, s), *train_only_examples(cfg, s)):
                rows[ex.task].append(ex)
        counts["mmeb-train"] = layouts.write_mmeb_train(out / "mmeb-train", rows, train_images)
        log(f"mmeb-train: {counts['mmeb-train']}")
    if "nli" in want:
        triplets = []
        for s in train:
            rng = _rng(cfg, "nli", s)
            for _ in range(cfg.stage1_pairs_per_scene):
                triplets.append(nli_triplet(s, rng))
        counts["nli"] = layouts.write_nli(out / "nli", triplets)
        log(f"nli: {counts['nli']} triplets")
    if "llava-pretrain" in want:
        entries: list[tuple[str, str | None, str, str]] = []
        for s in train:
            rng = _rng(cfg, "pretrain", s)
            entries.append(
                (f"{s.scene_id}-short", s.scene_id, layouts.SHORT_REQUEST, short_captions(s, rng, 1)[0])
            )
            long = long_caption(s, rng, variant=rng.randrange(2))
            entries.append((f"{s.scene_id}-long", s.scene_id, layouts.LONG_REQUEST, long))
            entries.extend(_summary_entries(s, _rng(cfg, "summary", s)))
        counts["llava-pretrain"] = layouts.write_llava_pretrain(out / "llava-pretrain", entries, train_images)
        log(f"llava-pretrain: {counts['llava-pretrain']} entries")

    sync_all()  # every data file and image reaches the disk before the completion marker
    manifest = {
        "generator": "uniretrieve.scenes",
        "version": __version__,
        "config": cfg.to_dict(),
        "counts": counts,
    }
    write_text(out / CONFIG_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / PENDING_FILE).unlink()
    return GenerateResult(out, counts, skipped=False)


def nli_triplet(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """(sent0, sent1, hard_neg): two wordings of the scene, and sent0's wording of a minimally changed scene."""
    s0, s1 = rng.sample(range(len(PARAPHRASE_STYLES)), 2)
    seed0 = rng.random()
    sent0 = paraphrase(scene, s0, random.Random(seed0))
    sent1 = paraphrase(scene, s1, random.Random(rng.random()))
    # Same style and same random draws as sent0, so the texts differ only where the scenes differ.
    hard_neg = paraphrase(perturbed_scene(scene, rng), s0, random.Random(seed0))
    return sent0, sent1, hard_neg


def _write_mmeb_eval(
    cfg: GenerateConfig, root: Path, test: list[Scene], images: layouts.ImageStore
) -> dict[str, int]:
    by_id = {s.scene_id: s for s in test}
    captions = {s.scene_id: retrieval_caption(cfg, s)[0] for s in test}
    rows: dict[str, list[tuple[TaskExample, list[str], list[Any]]]] = {t: [] for t in TASKS}
    for s in test:
        for ex in task_examples(cfg, s):
            if len(rows[ex.task]) < cfg.mmeb_eval_rows:
                texts, keys = eval_candidates(
                    ex, test, by_id, captions, cfg.mmeb_eval_candidates, _rng(cfg, f"candidates/{ex.task}", s)
                )
                rows[ex.task].append((ex, texts, keys))
    return layouts.write_mmeb_eval(root, rows, TASKS, images)


__all__ = ["LAYOUTS", "GenerateConfig", "GenerateResult", "generate", "nli_triplet", "split_scenes"]
