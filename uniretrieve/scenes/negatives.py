"""SugarCrepe-style hard negatives, false by construction.

SugarCrepe (Hsieh et al. 2023, github.com/RAIVNLab/sugar-crepe, docs/benchmarks.md#sugarcrepe) pairs each image
with a true caption and a minimally edited false one, in seven categories: replace an object / attribute /
relation, swap two objects / attributes, add an object / attribute. Here both captions are rendered from `Claim`s,
the edit is made on the claim, and the pair is kept only when the checker says the positive holds and the negative
does not. Because both sides are rendered by the same `render_claim`, the texts differ only where the claims
differ, so the negative stays grammatical and carries no wording artifact that would give it away.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from uniretrieve.eval.metrics import SUGARCREPE_CATEGORIES
from uniretrieve.scenes.claims import Claim, ObjectRef, holds, render_claim
from uniretrieve.scenes.spec import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    relation_holds,
)

CATEGORIES: tuple[str, ...] = SUGARCREPE_CATEGORIES
"""SugarCrepe's category names, which are also its file names (`replace_obj.json`, …)."""


@dataclass(frozen=True)
class HardNegative:
    category: str
    positive: Claim
    negative: Claim

    @property
    def caption(self) -> str:
        return render_claim(self.positive)

    @property
    def negative_caption(self) -> str:
        return render_claim(self.negative)


def _set_object(claim: Claim, i: int, ref: ObjectRef) -> Claim:
    objs = list(claim.objects)
    objs[i] = ref
    return replace(claim, objects=tuple(objs))


def _replace_obj(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    for i in rng.sample(range(len(pos.objects)), len(pos.objects)):
        ref = pos.objects[i]
        for shape in rng.sample(SHAPES, len(SHAPES)):
            if shape != ref.shape:
                neg = _set_object(pos, i, replace(ref, shape=shape))
                if not holds(neg, scene):
                    return neg
    return None


def _replace_att(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    slots = [(i, a) for i, r in enumerate(pos.objects) for a in ATTRIBUTES if r.get(a) is not None]
    for i, a in rng.sample(slots, len(slots)):
        ref = pos.objects[i]
        values = ATTRIBUTE_VALUES[a]
        for v in rng.sample(values, len(values)):
            if v != ref.get(a):
                neg = _set_object(pos, i, ref.with_attribute(a, v))
                if not holds(neg, scene):
                    return neg
    return None


def _replace_rel(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    if pos.relation is None:
        return None
    for rel in rng.sample(RELATIONS, len(RELATIONS)):
        if rel != pos.relation:
            neg = replace(pos, relation=rel)
            if not holds(neg, scene):
                return neg
    return None


def _swap_obj(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    if len(pos.objects) < 2 or pos.objects[0].shape == pos.objects[1].shape:
        return None
    a, b = pos.objects[0], pos.objects[1]
    neg = _set_object(_set_object(pos, 0, replace(a, shape=b.shape)), 1, replace(b, shape=a.shape))
    return None if holds(neg, scene) else neg


def _swap_att(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    if len(pos.objects) < 2:
        return None
    a, b = pos.objects[0], pos.objects[1]
    for att in rng.sample(ATTRIBUTES, len(ATTRIBUTES)):
        va, vb = a.get(att), b.get(att)
        if va is None or vb is None or va == vb:
            continue
        neg = _set_object(_set_object(pos, 0, a.with_attribute(att, vb)), 1, b.with_attribute(att, va))
        if not holds(neg, scene):
            return neg
    return None


def _add_obj(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    present = {(o.shape, o.colour) for o in scene.objects}
    colours = ATTRIBUTE_VALUES["colour"]
    for _ in range(50):
        shape, colour = rng.choice(SHAPES), rng.choice(colours)
        if (shape, colour) in present or any(r.shape == shape and r.colour == colour for r in pos.objects):
            continue
        neg = replace(pos, objects=(*pos.objects, ObjectRef(shape=shape, colour=colour)))
        if not holds(neg, scene):
            return neg
    return None


def _add_att(pos: Claim, scene: Scene, rng: random.Random) -> Claim | None:
    slots = [(i, a) for i, r in enumerate(pos.objects) for a in ATTRIBUTES if r.get(a) is None]
    for i, a in rng.sample(slots, len(slots)):
        values = ATTRIBUTE_VALUES[a]
        for v in rng.sample(values, len(values)):
            neg = _set_object(pos, i, pos.objects[i].with_attribute(a, v))
            if not holds(neg, scene):
                return neg
    return None


EDITS: dict[str, Callable[[Claim, Scene, random.Random], Claim | None]] = {
    "replace_obj": _replace_obj,
    "replace_att": _replace_att,
    "replace_rel": _replace_rel,
    "swap_obj": _swap_obj,
    "swap_att": _swap_att,
    "add_obj": _add_obj,
    "add_att": _add_att,
}


def positive_claim(scene: Scene, rng: random.Random, category: str) -> Claim:
    """A true caption claim shaped for `category`: two related objects when the scene has two (every category but
    add_* needs them), colour always named, size and texture sometimes — add_att needs one left out."""
    objs = list(scene.objects)
    wants_pair = len(objs) >= 2 and (category not in ("add_obj", "add_att") or rng.random() < 0.6)
    if category == "add_att":
        p_size, p_tex = 0.3, 0.2
    else:
        p_size, p_tex = 0.5, 0.4

    def ref(o: SceneObject) -> ObjectRef:
        return ObjectRef(
            shape=o.shape,
            colour=o.colour,
            size=o.size if rng.random() < p_size else None,
            texture=o.texture if rng.random() < p_tex else None,
        )

    if not wants_pair:
        return Claim(objects=(ref(rng.choice(objs)),))
    a, b = rng.sample(objs, 2)
    if category == "add_obj" and rng.random() < 0.5:
        # A plain list sometimes, so "… and a …" is not a tell of the negative.
        return Claim(objects=(ref(a), ref(b)))
    true_rels = [r for r in RELATIONS if relation_holds(r, a, b)]
    if not true_rels:  # same row and column is impossible (one object per cell); kept for safety
        return Claim(objects=(ref(a), ref(b)))
    # "next to" is the vaguest relation; prefer a directional one when one holds.
    directional = [r for r in true_rels if r != "next to"]
    rel = rng.choice(directional or true_rels)
    return Claim(objects=(ref(a), ref(b)), relation=rel)


def hard_negative(scene: Scene, category: str, rng: random.Random, attempts: int = 8) -> HardNegative | None:
    """A (positive, negative) pair of `category` for `scene`, or None when the scene cannot give one
    (e.g. swap_obj with a single object)."""
    if category not in EDITS:
        raise ValueError(f"unknown SugarCrepe category {category!r}; expected one of {', '.join(CATEGORIES)}")
    for _ in range(attempts):
        pos = positive_claim(scene, rng, category)
        if not holds(pos, scene):  # pragma: no cover - positive_claim builds true claims
            raise AssertionError(f"positive claim {render_claim(pos)!r} is false for {scene.scene_id}")
        neg = EDITS[category](pos, scene, rng)
        if neg is not None:
            assert not holds(neg, scene), f"negative {render_claim(neg)!r} holds for {scene.scene_id}"
            return HardNegative(category, pos, neg)
    return None


def perturbed_scene(scene: Scene, rng: random.Random) -> Scene:
    """`scene` with one visible change — one object's shape, colour, size or texture replaced, or one attribute
    swapped between two objects — such that a description naming every object's attributes no longer fits it.
    Used for the stage-1 `hard_neg` sentence (a contradiction of the positive, as in SimCSE's NLI triplets)."""
    from uniretrieve.scenes.tasks import content_key

    objs = list(scene.objects)
    for _ in range(100):
        new = list(objs)
        if len(objs) >= 2 and rng.random() < 0.3:
            i, j = rng.sample(range(len(objs)), 2)
            att = rng.choice(("shape", *ATTRIBUTES))
            vi, vj = getattr(objs[i], att), getattr(objs[j], att)
            new[i], new[j] = replace(objs[i], **{att: vj}), replace(objs[j], **{att: vi})
        else:
            i = rng.randrange(len(objs))
            att = rng.choice(("shape", *ATTRIBUTES))
            values = SHAPES if att == "shape" else ATTRIBUTE_VALUES[att]
            new[i] = replace(objs[i], **{att: rng.choice([v for v in values if v != getattr(objs[i], att)])})
        if len({(o.shape, o.colour) for o in new}) != len(new):
            continue  # two objects would share shape and colour: not a valid scene
        candidate = replace(scene, objects=tuple(new))
        if content_key(candidate) != content_key(scene):
            return candidate
    raise RuntimeError(f"could not perturb scene {scene.scene_id}")  # pragma: no cover
