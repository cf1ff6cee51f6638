"""Captions of a scene: short ones (Flickr/COCO analogue), long ones (ShareGPT4V/Urban1K analogue) and paraphrase
pairs (stage-1 text pairs). All are pure functions of (scene, rng), so a seed fixes every word.

- Short: at most 15 words about one or two objects, rendered from a `Claim` and checked true with `holds`.
- Long: 80–200 words naming every object with all its attributes, where it sits and how objects relate, and a
  closing summary that repeats every object's attributes, so the discriminating details are also in the last part
  (a 77-token text encoder sees the opening and loses the end; Long-CLIP's motivation,
  docs/benchmarks.md#long-captions).
- Paraphrase: one description of the whole scene in one of several wordings; two different wordings of one scene
  form a stage-1 pair.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

from uniretrieve.scenes.claims import (
    LOCATION_PHRASES,
    NUMBER_WORDS,
    SIZE_WORDS,
    TEXTURE_WORDS,
    Claim,
    ObjectRef,
    article,
    holds,
    noun_phrase,
    render_claim,
)
from uniretrieve.scenes.spec import (
    ATTRIBUTES,
    CELL_NAMES,
    COLOURS,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    relation_holds,
)

SHORT_MAX_WORDS = 15
LONG_MIN_WORDS, LONG_MAX_WORDS = 80, 200


def word_count(text: str) -> int:
    return len(text.split())


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# --- short captions ----------------------------------------------------------------------------------------------
def _short_claim(scene: Scene, rng: random.Random) -> Claim:
    objs = list(scene.objects)

    def ref(o: SceneObject, cell: bool = False) -> ObjectRef:
        attrs = tuple(a for a in ATTRIBUTES if a == "colour" or rng.random() < 0.5)
        if rng.random() < 0.15:
            attrs = tuple(a for a in attrs if a != "colour")
        return ObjectRef.of(o, attrs, cell=cell)

    kind = rng.random()
    if len(objs) >= 2 and kind < 0.45:
        a, b = rng.sample(objs, 2)
        rels = [r for r in RELATIONS if relation_holds(r, a, b)]
        return Claim(objects=(ref(a), ref(b)), relation=rng.choice(rels))
    if len(objs) >= 2 and kind < 0.6:
        a, b = rng.sample(objs, 2)
        return Claim(objects=(ref(a), ref(b)))
    if kind < 0.7:
        return Claim(objects=(ObjectRef.of(rng.choice(objs), ("colour",)),), count=len(objs))
    return Claim(objects=(ref(rng.choice(objs), cell=rng.random() < 0.7),))


def short_captions(scene: Scene, rng: random.Random, n: int = 5) -> list[str]:
    """`n` distinct true short captions (≤ 15 words, about one or two objects)."""
    out: list[str] = []
    for _ in range(200 * n):
        claim = _short_claim(scene, rng)
        text = render_claim(claim)
        if word_count(text) <= SHORT_MAX_WORDS and text not in out:
            if not holds(claim, scene):  # pragma: no cover - claims are built from the scene
                raise AssertionError(f"short caption {text!r} is false for {scene.scene_id}")
            out.append(text)
            if len(out) == n:
                return out
    raise RuntimeError(f"could not find {n} distinct short captions for {scene.scene_id}")  # pragma: no cover


# --- long captions -----------------------------------------------------------------------------------------------
_TEXTURE_CLAUSES: dict[str, tuple[str, ...]] = {
    "solid": ("filled with one flat colour", "painted in a single solid colour"),
    "striped": ("filled with light diagonal stripes", "covered in thin diagonal stripes"),
    "dotted": ("covered in small light dots", "decorated with a pattern of small pale dots"),
}
_SIZE_CLAUSES: dict[str, str] = {
    "small": "takes up only a small part of its cell",
    "medium": "fills about half of its cell",
    "large": "fills most of its cell",
}


def spatial_phrase(a: SceneObject, b: SceneObject) -> str:
    """Where a is relative to b: 'directly above', 'above and to the left of', …"""
    h = "to the left of" if a.col < b.col else "to the right of" if a.col > b.col else None
    v = "above" if a.row < b.row else "below" if a.row > b.row else None
    if h and v:
        return f"{v} and {h}"
    return f"directly {h or v}"


def _full_np(o: SceneObject, determiner: str = "a") -> str:
    return noun_phrase(ObjectRef.of(o), determiner=determiner)


def _short_name(o: SceneObject) -> str:
    return f"the {o.colour} {o.shape}"


def _list(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _object_sentence(o: SceneObject, rng: random.Random, full: bool) -> str:
    where = _cap(LOCATION_PHRASES[o.cell])
    verb = rng.choice(("there is", "sits", "you can see"))
    base = f"{where} {verb} {_full_np(o)}"
    if not full:
        return base + "."
    texture = rng.choice(_TEXTURE_CLAUSES[o.texture])
    outline = "a thin dark outline" if o.colour == "black" else f"a darker {o.colour} outline"
    sentence = f"{base}, {texture} and drawn with {outline}."
    if o.shape != "circle" and abs(o.rotation) >= 6:
        turn = "clockwise" if o.rotation > 0 else "counterclockwise"
        sentence += f" It is turned a little {turn}."
    return sentence


def long_caption(scene: Scene, rng: random.Random, variant: int = 0) -> str:
    """An 80–200 word description of the whole scene. `variant` 0 walks the grid top to bottom; variant 1 (a
    second long set, Urban1K analogue) walks it bottom to top with other wording."""
    objs = list(scene.in_reading_order())
    if variant == 1:
        objs.reverse()
    n = len(objs)
    count = NUMBER_WORDS[n]
    noun = "shape" if n == 1 else "shapes"
    if variant == 0:
        intro = f"This image shows {count} flat {noun} on a plain light grey background, with nothing else in the picture."
        grid = (
            "The shape sits in one cell of an invisible three by three grid."
            if n == 1
            else "The shapes are placed on an invisible three by three grid, one per cell."
        )
        closing = "In summary, the picture contains " + _list([_full_np(o) for o in objs]) + "."
    else:
        intro = (
            f"A simple drawing of {count} {noun} against an empty pale grey background, seen from the front."
        )
        grid = f"Imagine the canvas cut into nine equal cells; {count} of them {'holds' if n == 1 else 'hold'} a {noun[:5]}."
        closing = (
            f"The only shape in the picture is {_full_np(objs[0])}."
            if n == 1
            else "From the bottom of the picture to the top, the shapes are "
            + _list([_full_np(o) for o in objs])
            + "."
        )
    empty = [CELL_NAMES[c] for c in range(9) if c not in {o.cell for o in objs}]
    empty_sentence = (
        f"The {_list(empty)} cells are empty."
        if len(empty) <= 3
        else f"The other {NUMBER_WORDS[len(empty)]} cells are empty."
    )
    relations = [
        f"{_cap(_short_name(a))} is {spatial_phrase(a, b)} {_short_name(b)}."
        for a, b in itertools.pairwise(objs)
    ]
    sizes = [f"{_cap(_short_name(o))} {_SIZE_CLAUSES[o.size]}." for o in objs]
    style = "Every shape is drawn flat, without shading, shadows or text, and no two shapes overlap."
    full_objects = [_object_sentence(o, random.Random(rng.random()), full=True) for o in objs]
    short_objects = [_object_sentence(o, random.Random(rng.random()), full=False) for o in objs]

    # Mandatory parts first, optional ones by priority while the budget allows; order in the text stays fixed.
    use_full = sum(word_count(s) for s in full_objects) + 60 <= LONG_MAX_WORDS
    parts: dict[str, list[str]] = {
        "intro": [intro],
        "grid": [],
        "objects": full_objects if use_full else short_objects,
        "relations": [],
        "sizes": [],
        "empty": [],
        "style": [],
        "closing": [closing],
    }
    optional = [
        ("relations", relations),
        ("grid", [grid]),
        ("empty", [empty_sentence]),
        ("style", [style]),
        ("sizes", sizes),
    ]
    target = rng.randint(110, 170)
    for key, sentences in optional:
        total = sum(word_count(s) for ss in parts.values() for s in ss)
        if total >= target:
            break
        extra = sum(word_count(s) for s in sentences)
        if total + extra <= LONG_MAX_WORDS:
            parts[key] = list(sentences)
    text = " ".join(s for ss in parts.values() for s in ss)
    if (
        not LONG_MIN_WORDS <= word_count(text) <= LONG_MAX_WORDS
    ):  # pragma: no cover - the budget above prevents it
        raise AssertionError(f"long caption of {scene.scene_id} has {word_count(text)} words")
    return text


# --- paraphrases (stage-1 pairs) ---------------------------------------------------------------------------------
_SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
_TEXTURE_WITH: dict[str, tuple[str, ...]] = {
    "solid": ("with no pattern", "in a plain fill"),
    "striped": ("with stripes", "with a striped fill"),
    "dotted": ("with dots", "with a dotted fill"),
}


def _np_adjectives(o: SceneObject, rng: random.Random) -> str:
    size = rng.choice(_SIZE_SYNONYMS[o.size])
    tex = TEXTURE_WORDS[o.texture] if o.texture != "solid" or rng.random() < 0.5 else "solid"
    words = f"{size} {tex} {o.colour} {o.shape}"
    return f"{article(words)} {words}"


def _np_with(o: SceneObject, rng: random.Random) -> str:
    size = rng.choice(_SIZE_SYNONYMS[o.size])
    words = f"{size} {o.colour} {o.shape}"
    return f"{article(words)} {words} {rng.choice(_TEXTURE_WITH[o.texture])}"


def _np_paren(o: SceneObject, rng: random.Random) -> str:
    return f"{article(o.colour)} {o.colour} {o.shape} ({SIZE_WORDS[o.size]}, {TEXTURE_WORDS[o.texture]})"


def _style_count(objs: list[SceneObject], rng: random.Random) -> str:
    n = len(objs)
    head = f"{_cap(NUMBER_WORDS[n])} {'shape' if n == 1 else 'shapes'}: "
    return head + _list([_np_adjectives(o, rng) for o in objs]) + "."


def _style_there(objs: list[SceneObject], rng: random.Random) -> str:
    return "There is " + _list([_np_with(o, rng) for o in objs]) + "."


def _style_positions(objs: list[SceneObject], rng: random.Random) -> str:
    parts = [f"{LOCATION_PHRASES[o.cell]}, {_np_adjectives(o, rng)}" for o in objs]
    return _cap("; ".join(parts)) + "."


def _style_paren(objs: list[SceneObject], rng: random.Random) -> str:
    return "A picture showing " + _list([_np_paren(o, rng) for o in objs]) + "."


def _style_contains(objs: list[SceneObject], rng: random.Random) -> str:
    return "The image contains " + _list([_np_with(o, rng) for o in objs]) + " on a grey background."


PARAPHRASE_STYLES: tuple[Callable[[list[SceneObject], random.Random], str], ...] = (
    _style_count,
    _style_there,
    _style_positions,
    _style_paren,
    _style_contains,
)


def paraphrase(scene: Scene, style: int, rng: random.Random) -> str:
    """The whole scene in wording `style` (index into PARAPHRASE_STYLES). Every style names every object's shape,
    colour, size and texture, so two styles of one scene say the same thing and a changed object shows."""
    objs = list(scene.in_reading_order())
    if rng.random() < 0.5:
        objs = rng.sample(objs, len(objs))
    return PARAPHRASE_STYLES[style](objs, rng)


def summary_answer(text: str) -> str | None:
    """ "colour shape" of the first object a caption names (its first colour word and the next shape word), the
    one-word-summary answer of the pretraining's summary rows; None when the text names no such pair."""
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    for i, w in enumerate(words):
        if w in COLOURS:
            for v in words[i + 1 :]:
                for shape in (v, v.removesuffix("s"), v.removesuffix("es")):  # circles, crosses
                    if shape in SHAPES:
                        return f"{w} {shape}"
            return None
    return None
