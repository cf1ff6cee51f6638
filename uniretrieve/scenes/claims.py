"""Claims: what a short caption asserts about a scene, as data — with the checker that decides truth.

Short captions, SugarCrepe positives and their hard negatives are all rendered from a `Claim`, and a claim is
checked against the `Scene` it describes by `holds`. This is what makes negatives "false by construction": a
negative is kept only when `holds(negative, scene)` is False, and a positive only when it is True.

Semantics (existential, like a caption): `Claim(objects=(r0, r1), relation="above")` holds when there are two
*different* objects o0, o1 in the scene with o0 matching r0, o1 matching r1 and `o0 above o1`. Further object
references (index ≥ 2) only need to exist (distinct from the others). `count`, when set, is the total number of
objects in the scene.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from uniretrieve.scenes.spec import (
    ATTRIBUTES,
    COLOURS,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    relation_holds,
)

SIZE_WORDS: dict[str, str] = {"small": "small", "medium": "medium-sized", "large": "large"}
TEXTURE_WORDS: dict[str, str] = {"solid": "plain", "striped": "striped", "dotted": "dotted"}
RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "next to": "next to",
}
LOCATION_PHRASES: tuple[str, ...] = (
    "in the top left corner",
    "at the top middle",
    "in the top right corner",
    "on the middle left",
    "in the center",
    "on the middle right",
    "in the bottom left corner",
    "at the bottom middle",
    "in the bottom right corner",
)
NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)


@dataclass(frozen=True)
class ObjectRef:
    """A description of one object; None fields are not asserted."""

    shape: str
    colour: str | None = None
    size: str | None = None
    texture: str | None = None
    cell: int | None = None

    def matches(self, obj: SceneObject) -> bool:
        return (
            obj.shape == self.shape
            and self.colour in (None, obj.colour)
            and self.size in (None, obj.size)
            and self.texture in (None, obj.texture)
            and self.cell in (None, obj.cell)
        )

    def get(self, attribute: str) -> str | None:
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {attribute!r}; expected one of {', '.join(ATTRIBUTES)}")
        return getattr(self, attribute)

    def with_attribute(self, attribute: str, value: str | None) -> ObjectRef:
        self.get(attribute)  # validates the name
        return replace(self, **{attribute: value})

    @classmethod
    def of(cls, obj: SceneObject, attributes: tuple[str, ...] = ATTRIBUTES, cell: bool = False) -> ObjectRef:
        """A reference naming `obj` by its shape plus the given attributes (and its cell when `cell`)."""
        values = {a: obj.attribute(a) for a in attributes}
        return cls(shape=obj.shape, cell=obj.cell if cell else None, **values)


@dataclass(frozen=True)
class Claim:
    objects: tuple[ObjectRef, ...]
    relation: str | None = None
    """Relation from objects[0] to objects[1] (a key of `RELATION_PHRASES`)."""
    count: int | None = None

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("a claim names at least one object")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(
                    f"unknown relation {self.relation!r}; expected one of {', '.join(RELATIONS)}"
                )
            if len(self.objects) < 2:
                raise ValueError("a relation needs two objects")
        for r in self.objects:
            if r.shape not in SHAPES:
                raise ValueError(f"unknown shape {r.shape!r}")


def holds(claim: Claim, scene: Scene) -> bool:
    """Whether `claim` is true of `scene` (the module docstring gives the semantics)."""
    if claim.count is not None and claim.count != len(scene.objects):
        return False
    if len(claim.objects) > len(scene.objects):
        return False
    candidates = [[o for o in scene.objects if ref.matches(o)] for ref in claim.objects]
    if any(not c for c in candidates):
        return False
    for combo in itertools.product(*candidates):
        if len({id(o) for o in combo}) != len(combo):
            continue
        if claim.relation is None or relation_holds(claim.relation, combo[0], combo[1]):
            return True
    return False


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def noun_phrase(ref: ObjectRef, *, determiner: str = "a") -> str:
    """'a large striped red circle in the center' — adjectives in English order: size, pattern, colour."""
    words = []
    if ref.size is not None:
        words.append(SIZE_WORDS[ref.size])
    if ref.texture is not None:
        words.append(TEXTURE_WORDS[ref.texture])
    if ref.colour is not None:
        words.append(ref.colour)
    words.append(ref.shape)
    det = article(words[0]) if determiner == "a" else determiner
    phrase = f"{det} {' '.join(words)}"
    if ref.cell is not None:
        phrase += f" {LOCATION_PHRASES[ref.cell]}"
    return phrase


def render_claim(claim: Claim) -> str:
    """The claim as one grammatical sentence in the canonical wording (the one negatives are edited in)."""
    nps = [noun_phrase(r) for r in claim.objects]
    if claim.relation is not None:
        head = f"{nps[0]} {RELATION_PHRASES[claim.relation]} {nps[1]}"
        rest = nps[2:]
    else:
        head, rest = nps[0], nps[1:]
    if len(rest) == 1:
        body = f"{head} and {rest[0]}"
    elif rest:
        body = f"{head}, {', '.join(rest[:-1])} and {rest[-1]}"
    else:
        body = head
    if claim.count is not None:
        if claim.count == 1:
            body = f"just one shape, {body}"
        else:
            body = f"{NUMBER_WORDS[claim.count]} shapes, including {body}"
    return body[0].upper() + body[1:] + "."


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_NP = re.compile(
    rf"(?:a|an) (?:(?P<size>{_alternation(SIZE_WORDS.values())}) )?(?:(?P<texture>{_alternation(TEXTURE_WORDS.values())}) )?"
    rf"(?:(?P<colour>{_alternation(COLOURS)}) )?(?P<shape>{_alternation(SHAPES)})"
    rf"(?: (?P<location>{_alternation(LOCATION_PHRASES)}))?"
)
_REL = re.compile(rf" (?P<rel>{_alternation(RELATION_PHRASES.values())}) ")
_COUNT = re.compile(rf"(?:(?P<n>{_alternation(NUMBER_WORDS)}) shapes, including |(?P<one>just one shape, ))")


def parse_claim(text: str) -> Claim:
    """Read back a sentence written by `render_claim` (the inverse of it), so written captions can be re-checked
    against their scene. Raises ValueError naming the text when it is not in that grammar."""
    s = text.strip()
    if not s.endswith("."):
        raise ValueError(f"not a rendered claim (no final full stop): {text!r}")
    s = s[0].lower() + s[1:-1]
    pos, count = 0, None
    if m := _COUNT.match(s):
        count = 1 if m.group("one") else NUMBER_WORDS.index(m.group("n"))
        pos = m.end()
    sizes = {v: k for k, v in SIZE_WORDS.items()}
    textures = {v: k for k, v in TEXTURE_WORDS.items()}
    relations = {v: k for k, v in RELATION_PHRASES.items()}

    def np_at(p: int) -> tuple[ObjectRef, int]:
        m = _NP.match(s, p)
        if m is None:
            raise ValueError(f"not a rendered claim (expected an object at character {p}): {text!r}")
        ref = ObjectRef(
            shape=m.group("shape"),
            colour=m.group("colour"),
            size=sizes[m.group("size")] if m.group("size") else None,
            texture=textures[m.group("texture")] if m.group("texture") else None,
            cell=LOCATION_PHRASES.index(m.group("location")) if m.group("location") else None,
        )
        return ref, m.end()

    ref, pos = np_at(pos)
    refs, relation = [ref], None
    if m := _REL.match(s, pos):
        relation = relations[m.group("rel")]
        ref, pos = np_at(m.end())
        refs.append(ref)
    while pos < len(s):
        for sep in (", ", " and "):
            if s.startswith(sep, pos):
                ref, pos = np_at(pos + len(sep))
                refs.append(ref)
                break
        else:
            raise ValueError(f"not a rendered claim (unexpected text at character {pos}): {text!r}")
    return Claim(objects=tuple(refs), relation=relation, count=count)
