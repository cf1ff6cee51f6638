"""Instruction tasks over scenes in the MMEB format (VLM2Vec; docs/method.md#stage-2-data,
docs/benchmarks.md#mmeb).

Each task is one MMEB "dataset": an instruction with the image token `<|image_1|>`, a query side and a target side.
Instructions follow VLM2Vec's wording for the matching real dataset (VOC2007 classification, VQA, MSCOCO t2i/i2t,
MSCOCO grounding), with "everyday image" replaced by "image of shapes" because these images are not everyday photos.

Images are named by `ImageKey = (scene_id, cell)`: cell None is the whole scene, a cell number is that object's
grid-cell crop (`render.crop_object`). Writers turn keys into paths.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from uniretrieve.scenes.claims import LOCATION_PHRASES
from uniretrieve.scenes.spec import COLOURS, SHAPES, Scene, SceneObject

ImageKey = tuple[str, int | None]
IMAGE_TOKEN = "<|image_1|>"

TASKS: dict[str, str] = {
    "Scene_Cls": "Classification",
    "Scene_VQA_Count": "VQA",
    "Scene_VQA_Colour": "VQA",
    "Scene_VQA_Relation": "VQA",
    "Scene_t2i": "Retrieval",
    "Scene_i2t": "Retrieval",
    "Scene_Grounding": "Grounding",
}
"""Task (= MMEB-train subset and MMEB-eval dataset) name → MMEB meta-task."""

TRAIN_ONLY_TASKS: tuple[str, ...] = ("Scene_LongCap_t2i", "Scene_LongCap_i2t", "Scene_Compose_i2t")
"""MMEB-train subsets with no MMEB-eval counterpart, written for the training scenes only, bare (no instruction)
as the benchmarks embed their items: a long caption (80–200 words, the Urban1K / ShareGPT4V layouts' kind) and its
image both ways; and an image with a short compositional caption whose `neg_text` is a SugarCrepe-style edit of it
(replace, swap or add; the NegCLIP recipe of training on generated hard-negative captions, Yuksekgonul et al.
2023, docs/tiny-model.md). MMEB-train has neither; the built-in model is scored on both."""

CLS_INSTRUCTION = f"{IMAGE_TOKEN}\nIdentify the object shown in the image\n"
VQA_INSTRUCTION = f"{IMAGE_TOKEN}\nRepresent the given image with the following question: {{question}}\n"
T2I_INSTRUCTION = "Find me an image of shapes that matches the given caption: {caption}\n"
I2T_INSTRUCTION = f"{IMAGE_TOKEN}\nFind a caption describing the given image of shapes.\n"
GROUNDING_INSTRUCTION = (
    f'{IMAGE_TOKEN}\nSelect the portion of the image that isolates the object labeled as "{{label}}"\n'
)
IMAGE_TARGET = f"{IMAGE_TOKEN}\nRepresent the given image.\n"
CROP_TARGET = f"{IMAGE_TOKEN}\nRepresent the given cropped image of the object"

CLS_LABELS: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
COUNT_ANSWERS: tuple[str, ...] = tuple(str(i) for i in range(10))
COLOUR_ANSWERS: tuple[str, ...] = tuple(COLOURS)
DIRECTION_ANSWERS: tuple[str, ...] = ("left", "right", "above", "below")
YES_NO: tuple[str, ...] = ("yes", "no")


@dataclass(frozen=True)
class TaskExample:
    """One query and its positive target (one MMEB-train row before paths; an MMEB-eval row before candidates)."""

    task: str
    scene_id: str
    qry_text: str
    qry_image: ImageKey | None
    pos_text: str
    pos_image: ImageKey | None
    answer_space: tuple[str, ...] = ()
    """For classification/VQA: every possible answer (the eval candidate list); empty for retrieval/grounding."""
    neg_text: str = ""
    """A wrong answer / false caption for MMEB-train's optional neg_text column; "" when none."""
    label: str = ""
    """Grounding/classification: the object's "colour shape" (used to keep distractor crops honest)."""


def label_of(o: SceneObject) -> str:
    return f"{o.colour} {o.shape}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def classification(scene: Scene, rng: random.Random) -> TaskExample:
    o = rng.choice(scene.objects)
    label = label_of(o)
    wrong = rng.choice([c for c in CLS_LABELS if c != label])
    return TaskExample(
        "Scene_Cls",
        scene.scene_id,
        CLS_INSTRUCTION,
        (scene.scene_id, o.cell),
        label,
        None,
        CLS_LABELS,
        wrong,
        label,
    )


def vqa_count(scene: Scene, rng: random.Random) -> TaskExample:
    kind = rng.choice(("shape", "colour", "all"))
    if kind == "shape":
        # Ask about a present shape most of the time, an absent one sometimes (answer 0).
        shape = rng.choice([o.shape for o in scene.objects]) if rng.random() < 0.8 else rng.choice(SHAPES)
        question = f"How many {plural(shape)} are in the image?"
        n = sum(o.shape == shape for o in scene.objects)
    elif kind == "colour":
        colour = (
            rng.choice([o.colour for o in scene.objects])
            if rng.random() < 0.8
            else rng.choice(COLOUR_ANSWERS)
        )
        question = f"How many {colour} shapes are in the image?"
        n = sum(o.colour == colour for o in scene.objects)
    else:
        question = "How many shapes are in the image?"
        n = len(scene.objects)
    return _vqa("Scene_VQA_Count", scene, question, str(n), COUNT_ANSWERS, rng)


def vqa_colour(scene: Scene, rng: random.Random) -> TaskExample:
    o = rng.choice(scene.objects)
    question = f"What colour is the {o.shape} {LOCATION_PHRASES[o.cell]}?"
    return _vqa("Scene_VQA_Colour", scene, question, o.colour, COLOUR_ANSWERS, rng)


def vqa_relation(scene: Scene, rng: random.Random) -> TaskExample | None:
    """Direction question for a pair sharing a row or column (exactly one direction holds); otherwise a yes/no
    question about a diagonal pair. None for one-object scenes."""
    objs = list(scene.objects)
    if len(objs) < 2:
        return None
    pairs = [(a, b) for a in objs for b in objs if a is not b]
    aligned = [(a, b) for a, b in pairs if a.row == b.row or a.col == b.col]
    if aligned:
        a, b = rng.choice(aligned)
        answer = (
            ("left" if a.col < b.col else "right")
            if a.row == b.row
            else ("above" if a.row < b.row else "below")
        )
        question = f"Where is the {label_of(a)} relative to the {label_of(b)}?"
        return _vqa("Scene_VQA_Relation", scene, question, answer, DIRECTION_ANSWERS, rng)
    a, b = rng.choice(pairs)
    asked = rng.choice(("above", "below"))
    truth = (a.row < b.row) if asked == "above" else (a.row > b.row)
    question = f"Is the {label_of(a)} {asked} the {label_of(b)}?"
    return _vqa("Scene_VQA_Relation", scene, question, "yes" if truth else "no", YES_NO, rng)


def _vqa(
    task: str, scene: Scene, question: str, answer: str, space: Sequence[str], rng: random.Random
) -> TaskExample:
    wrong = rng.choice([a for a in space if a != answer])
    return TaskExample(
        task,
        scene.scene_id,
        VQA_INSTRUCTION.format(question=question),
        (scene.scene_id, None),
        answer,
        None,
        tuple(space),
        wrong,
    )


def text_to_image(scene: Scene, caption: str) -> TaskExample:
    return TaskExample(
        "Scene_t2i",
        scene.scene_id,
        T2I_INSTRUCTION.format(caption=caption),
        None,
        IMAGE_TARGET,
        (scene.scene_id, None),
    )


def image_to_text(scene: Scene, caption: str, false_caption: str = "") -> TaskExample:
    return TaskExample(
        "Scene_i2t",
        scene.scene_id,
        I2T_INSTRUCTION,
        (scene.scene_id, None),
        caption,
        None,
        neg_text=false_caption,
    )


def long_caption_examples(scene: Scene, caption: str, false_caption: str) -> list[TaskExample]:
    """The two long-caption rows (TRAIN_ONLY_TASKS) of a scene; `false_caption` (neg_text of the image→caption row) is the same
    wording of a minimally changed scene."""
    image = (scene.scene_id, None)
    return [
        TaskExample("Scene_LongCap_t2i", scene.scene_id, caption, None, "", image),
        TaskExample("Scene_LongCap_i2t", scene.scene_id, "", image, caption, None, neg_text=false_caption),
    ]


def compose_example(scene: Scene, caption: str, negative_caption: str) -> TaskExample:
    """The Scene_Compose_i2t row: the bare image, a true short caption, and its minimal false edit as neg_text."""
    image = (scene.scene_id, None)
    return TaskExample(
        "Scene_Compose_i2t", scene.scene_id, "", image, caption, None, neg_text=negative_caption
    )


def grounding(scene: Scene, rng: random.Random) -> TaskExample:
    o = rng.choice(scene.objects)
    return TaskExample(
        "Scene_Grounding",
        scene.scene_id,
        GROUNDING_INSTRUCTION.format(label=label_of(o)),
        (scene.scene_id, None),
        CROP_TARGET,
        (scene.scene_id, o.cell),
        label=label_of(o),
    )


@functools.lru_cache(maxsize=65536)
def content_key(scene: Scene) -> tuple[tuple[str, str, str, str], ...]:
    """What a full description without positions says; two scenes with equal keys fit the same such caption."""
    return tuple(sorted((o.shape, o.colour, o.size, o.texture) for o in scene.objects))


def eval_candidates(
    ex: TaskExample,
    scenes: Sequence[Scene],
    by_id: dict[str, Scene],
    captions: dict[str, str],
    k: int,
    rng: random.Random,
) -> tuple[list[str], list[ImageKey | None]]:
    """The MMEB-eval candidate list of `ex`, target first: (texts, image keys).

    Distractors are chosen so none is also correct: classification/VQA use the rest of the answer space; retrieval
    skips scenes with the same content key (a caption naming every object's attributes fits those too); grounding
    skips crops of another object with the same colour and shape.
    """
    if ex.answer_space:
        return [ex.pos_text, *(a for a in ex.answer_space if a != ex.pos_text)], [None] * len(ex.answer_space)
    target = by_id[ex.scene_id]
    others = [s for s in scenes if s.scene_id != ex.scene_id and content_key(s) != content_key(target)]
    if ex.task == "Scene_t2i":
        picked = rng.sample(others, min(k - 1, len(others)))
        keys: list[ImageKey | None] = [(ex.scene_id, None), *((s.scene_id, None) for s in picked)]
        return [IMAGE_TARGET] * len(keys), keys
    if ex.task == "Scene_i2t":
        picked = rng.sample(others, min(k - 1, len(others)))
        return [ex.pos_text, *(captions[s.scene_id] for s in picked)], [None] * (len(picked) + 1)
    if ex.task == "Scene_Grounding":
        assert ex.pos_image is not None
        own = [(ex.scene_id, o.cell) for o in target.in_reading_order() if o.cell != ex.pos_image[1]]
        pool = [
            (s.scene_id, o.cell)
            for s in scenes
            if s.scene_id != ex.scene_id
            for o in s.objects
            if label_of(o) != ex.label
        ]
        rest = rng.sample(pool, min(max(k - 1 - len(own), 0), len(pool)))
        keys = [ex.pos_image, *own, *rest][:k]
        return [CROP_TARGET] * len(keys), keys
    raise ValueError(f"task {ex.task} has no candidate rule")
