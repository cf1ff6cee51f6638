"""Claims checker and SugarCrepe-style hard negatives: positives true, negatives false, edits exactly as named."""

from __future__ import annotations

import difflib
import random
from dataclasses import replace

import pytest

from uniretrieve.scenes.claims import Claim, ObjectRef, holds, parse_claim, render_claim
from uniretrieve.scenes.generate import nli_triplet
from uniretrieve.scenes.negatives import CATEGORIES, hard_negative, perturbed_scene
from uniretrieve.scenes.spec import ATTRIBUTES, Scene, SceneObject, sample_scenes
from uniretrieve.scenes.tasks import content_key

ARTICLES = {"a", "an"}


def _scene() -> Scene:
    # red striped large circle top-left (cell 0), blue small square center (cell 4), green star bottom-left (cell 6)
    return Scene(
        "hand",
        96,
        (
            SceneObject("circle", "red", "large", "striped", 0),
            SceneObject("square", "blue", "small", "solid", 4),
            SceneObject("star", "green", "medium", "dotted", 6),
        ),
    )


def test_checker_by_hand() -> None:
    s = _scene()
    red_circle, blue_square = ObjectRef("circle", "red"), ObjectRef("square", "blue")
    assert holds(Claim((red_circle, blue_square), "above"), s)
    assert holds(Claim((red_circle, blue_square), "left of"), s)
    assert not holds(Claim((red_circle, blue_square), "below"), s)
    assert not holds(Claim((red_circle, blue_square), "next to"), s)  # diagonal, not edge-sharing
    assert holds(Claim((ObjectRef("circle", "red", "large", "striped"),)), s)
    assert not holds(Claim((ObjectRef("circle", "red", "small"),)), s)
    assert holds(Claim((ObjectRef("star"),), count=3), s)
    assert not holds(Claim((ObjectRef("star"),), count=2), s)
    # one object cannot fill two roles
    assert not holds(Claim((ObjectRef("star"), ObjectRef("star"))), s)
    assert holds(Claim((ObjectRef("star", cell=6),)), s) and not holds(Claim((ObjectRef("star", cell=7),)), s)
    assert render_claim(Claim((ObjectRef("circle", "orange", "large"), ObjectRef("square")), "left of")) == (
        "A large orange circle to the left of a square."
    )
    assert render_claim(Claim((ObjectRef("circle", "orange"),))) == "An orange circle."


def _words(text: str) -> list[str]:
    return [w for w in text.lower().rstrip(".").replace(",", "").split() if w not in ARTICLES]


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(w in it for w in small)


def _differing_fields(a: ObjectRef, b: ObjectRef) -> set[str]:
    return {f for f in ("shape", *ATTRIBUTES, "cell") if getattr(a, f) != getattr(b, f)}


@pytest.fixture(scope="module")
def negatives() -> list[tuple[Scene, str, object]]:
    scenes = sample_scenes(150, seed=3, prefix="neg")
    out = []
    for s in scenes:
        for c in CATEGORIES:
            hn = hard_negative(s, c, random.Random(f"{s.scene_id}/{c}"))
            if hn is not None:
                out.append((s, c, hn))
    return out


def test_every_category_is_produced_often(negatives: list) -> None:
    by_cat = {c: sum(1 for _, cat, _ in negatives if cat == c) for c in CATEGORIES}
    assert all(n >= 60 for n in by_cat.values()), by_cat  # of 150 scenes; swap/rel need two objects


def test_positive_true_negative_false(negatives: list) -> None:
    for scene, _cat, hn in negatives:
        assert holds(hn.positive, scene), hn.caption
        assert not holds(hn.negative, scene), hn.negative_caption
        assert hn.caption != hn.negative_caption
        # The written text carries exactly the claim: reading it back gives the same claim.
        assert parse_claim(hn.caption) == hn.positive and parse_claim(hn.negative_caption) == hn.negative


def test_parse_claim_rejects_other_text() -> None:
    for bad in ("A red circle", "A red blob.", "A red circle near a blue square.", "Two red circles."):
        with pytest.raises(ValueError, match="not a rendered claim"):
            parse_claim(bad)


def test_each_negative_differs_exactly_as_its_category_says(negatives: list) -> None:
    for _, cat, hn in negatives:
        p, n = hn.positive, hn.negative
        pw, nw = _words(hn.caption), _words(hn.negative_caption)
        if cat.startswith("add"):
            # Adding to a list moves its "and" ("A and B" → "A, B and C"); every other word stays in order.
            pw_, nw_ = [w for w in pw if w != "and"], [w for w in nw if w != "and"]
            assert _is_subsequence(pw_, nw_) and len(nw_) > len(pw_), (hn.caption, hn.negative_caption)
        if cat == "add_obj":
            assert n.objects[: len(p.objects)] == p.objects and len(n.objects) == len(p.objects) + 1
            assert n.relation == p.relation
        elif cat == "add_att":
            changed = [i for i in range(len(p.objects)) if p.objects[i] != n.objects[i]]
            assert len(changed) == 1 and len(n.objects) == len(p.objects)
            diff = _differing_fields(p.objects[changed[0]], n.objects[changed[0]])
            assert len(diff) == 1 and getattr(p.objects[changed[0]], diff.pop()) is None
        elif cat.startswith("replace"):
            assert len(pw) == len(nw) or cat == "replace_rel"
            if cat == "replace_rel":
                assert p.objects == n.objects and p.relation != n.relation
            else:
                changed = [i for i in range(len(p.objects)) if p.objects[i] != n.objects[i]]
                assert len(changed) == 1 and p.relation == n.relation
                diff = _differing_fields(p.objects[changed[0]], n.objects[changed[0]])
                assert (
                    diff == {"shape"}
                    if cat == "replace_obj"
                    else (len(diff) == 1 and diff <= set(ATTRIBUTES))
                )
                assert getattr(p.objects[changed[0]], next(iter(diff))) is not None
        elif cat.startswith("swap"):
            assert sorted(pw) == sorted(nw), (hn.caption, hn.negative_caption)
            a, b = p.objects[0], p.objects[1]
            field = "shape" if cat == "swap_obj" else next(iter(_differing_fields(a, n.objects[0])))
            assert n.objects[0] == replace(a, **{field: getattr(b, field)})
            assert n.objects[1] == replace(b, **{field: getattr(a, field)})
            assert n.relation == p.relation


def test_single_object_scene_skips_impossible_categories() -> None:
    s = Scene("one", 96, (SceneObject("heart", "pink", "small", "dotted", 4),))
    for c in ("replace_rel", "swap_obj", "swap_att"):
        assert hard_negative(s, c, random.Random(0)) is None
    for c in ("replace_obj", "replace_att", "add_obj", "add_att"):
        hn = hard_negative(s, c, random.Random(0))
        assert hn is not None and holds(hn.positive, s) and not holds(hn.negative, s)


def test_stage1_hard_negative_contradicts_and_differs_minimally() -> None:
    for s in sample_scenes(60, seed=5, prefix="nli"):
        p = perturbed_scene(s, random.Random(s.scene_id))
        assert content_key(p) != content_key(s)
        sent0, sent1, neg = nli_triplet(s, random.Random(s.scene_id))
        assert sent0 != sent1 and neg != sent0
        # Same wording, one changed detail: only a few words differ (a swap touches two objects; a texture
        # phrase such as "with dots" / "with a dotted fill" may change length).
        ops = difflib.SequenceMatcher(a=sent0.split(), b=neg.split(), autojunk=False).get_opcodes()
        assert sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal") <= 8, (sent0, neg)
        for o in s.objects:
            assert o.colour in sent0 and o.shape in sent0 and o.colour in sent1 and o.shape in sent1
