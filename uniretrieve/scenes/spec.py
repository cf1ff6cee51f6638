"""Scene model and sampler: what a generated image contains, as data.

A scene is 1–5 flat objects on a plain canvas, each in its own cell of a 3×3 grid, with a shape, a colour, a size
and a texture. Everything downstream (rendering, captions, negatives, tasks) is a pure function of a `Scene`, and
a scene is a pure function of `(seed, scene index)`, so the whole corpus is reproducible byte for byte.

Vocabulary is sized so that retrieval over ~2,000 scenes is hard but learnable: 8 shapes × 10 colours × 3 sizes ×
3 textures × 9 cells per object. No two objects of a scene share (shape, colour), so "the red circle" always names
exactly one object, which keeps referring expressions, questions and negatives unambiguous.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (247, 129, 21),
    "yellow": (240, 208, 30),
    "green": (44, 160, 60),
    "cyan": (30, 190, 210),
    "blue": (31, 80, 200),
    "purple": (130, 60, 180),
    "pink": (240, 120, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
}
SIZES: tuple[str, ...] = ("small", "medium", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
# Cells are numbered row-major: cell = 3 * row + col, row 0 at the top.
CELL_NAMES: tuple[str, ...] = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "next to")
ATTRIBUTES: tuple[str, ...] = ("colour", "size", "texture")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "size": SIZES, "texture": TEXTURES}
BACKGROUND: tuple[int, int, int] = (228, 228, 222)
Signature = tuple[tuple[str, str, str, str, int], ...]


@dataclass(frozen=True)
class SceneObject:
    """One object: its attributes and where it sits (grid cell plus a small jitter inside the cell)."""

    shape: str
    colour: str
    size: str
    texture: str
    cell: int
    dx: float = 0.0
    """Horizontal offset of the centre from the cell centre, as a fraction of the cell width."""
    dy: float = 0.0
    rotation: float = 0.0
    """Degrees; kept small so a rotated square never looks like a diamond."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, tuple(COLOURS)),
            ("size", self.size, SIZES),
            ("texture", self.texture, TEXTURES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
        if not 0 <= self.cell < 9:
            raise ValueError(f"cell must be in 0..8, got {self.cell}")

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def col(self) -> int:
        return self.cell % 3

    def attribute(self, name: str) -> str:
        """The value of 'colour', 'size' or 'texture'."""
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}; expected one of {', '.join(ATTRIBUTES)}")
        return str(getattr(self, name))


@dataclass(frozen=True)
class Scene:
    """A whole image's content. `objects` are in sampling order; captions sort them by cell where order matters."""

    scene_id: str
    image_size: int
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError(f"scene {self.scene_id}: a scene needs at least one object")
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"scene {self.scene_id}: two objects share a grid cell")
        keys = [(o.shape, o.colour) for o in self.objects]
        if len(set(keys)) != len(keys):
            raise ValueError(f"scene {self.scene_id}: two objects share shape and colour")

    def signature(self) -> Signature:
        """What a caption can tell apart (jitter and rotation excluded); used to keep scenes distinct."""
        return tuple(sorted((o.shape, o.colour, o.size, o.texture, o.cell) for o in self.objects))

    def in_reading_order(self) -> tuple[SceneObject, ...]:
        return tuple(sorted(self.objects, key=lambda o: o.cell))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scene_id": self.scene_id,
            "image_size": self.image_size,
            "objects": [asdict(o) for o in self.objects],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        return cls(
            scene_id=str(d["scene_id"]),
            image_size=int(d["image_size"]),
            objects=tuple(SceneObject(**o) for o in d["objects"]),
        )


def relation_holds(relation: str, a: SceneObject, b: SceneObject) -> bool:
    """Whether `a <relation> b` is true. Left/right compare columns, above/below rows (a diagonal neighbour is
    both left of and above); "next to" means sharing a cell edge."""
    if relation == "left of":
        return a.col < b.col
    if relation == "right of":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    if relation == "next to":
        return abs(a.row - b.row) + abs(a.col - b.col) == 1
    raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")


@dataclass(frozen=True)
class SamplerConfig:
    """How scenes are drawn. Defaults give a balanced mix of simple and crowded scenes."""

    object_count_weights: tuple[float, ...] = (0.10, 0.20, 0.25, 0.25, 0.20)
    """Relative weight of 1, 2, … objects; its length is the maximum object count (at most 9)."""
    image_sizes: tuple[int, ...] = (96, 112, 128)
    """Square canvas side in pixels, drawn uniformly per scene."""
    repeat_shape_prob: float = 0.3
    """Chance that a further object reuses a shape already in the scene, so counting questions have answers > 1."""
    texture_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)
    """Weights of solid, striped, dotted."""
    max_jitter: float = 0.06
    max_rotation: float = 12.0
    shapes: tuple[str, ...] = field(default=SHAPES)
    colours: tuple[str, ...] = field(default=tuple(COLOURS))

    def __post_init__(self) -> None:
        if not 1 <= len(self.object_count_weights) <= 9 or min(self.object_count_weights) < 0:
            raise ValueError("object_count_weights needs 1..9 non-negative weights (index i = i+1 objects)")
        if sum(self.object_count_weights) <= 0:
            raise ValueError("object_count_weights must not all be zero")
        if any(not 32 <= s <= 1024 for s in self.image_sizes) or not self.image_sizes:
            raise ValueError("image_sizes must be pixel sizes in 32..1024")
        if not 0.0 <= self.repeat_shape_prob <= 1.0:
            raise ValueError("repeat_shape_prob must be in [0, 1]")
        if not 0.0 <= self.max_jitter <= 0.08:
            raise ValueError(
                "max_jitter must be in [0, 0.08] of a cell, or large objects touch their neighbours"
            )
        unknown = set(self.shapes) - set(SHAPES) | set(self.colours) - set(COLOURS)
        if unknown:
            raise ValueError(f"unknown shapes/colours in SamplerConfig: {sorted(unknown)}")
        if len(self.shapes) * len(self.colours) < len(self.object_count_weights):
            raise ValueError("too few shape/colour pairs for the maximum object count")


def sample_scene(rng: random.Random, scene_id: str, config: SamplerConfig = SamplerConfig()) -> Scene:
    """Draw one scene from `rng`. Deterministic for a given rng state and config."""
    n = rng.choices(range(1, len(config.object_count_weights) + 1), weights=config.object_count_weights)[0]
    cells = rng.sample(range(9), n)
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    for cell in cells:
        while True:
            if objects and rng.random() < config.repeat_shape_prob:
                shape = rng.choice([o.shape for o in objects])
            else:
                shape = rng.choice(config.shapes)
            colour = rng.choice(config.colours)
            if (shape, colour) not in used:
                break
        used.add((shape, colour))
        objects.append(
            SceneObject(
                shape=shape,
                colour=colour,
                size=rng.choice(SIZES),
                texture=rng.choices(TEXTURES, weights=config.texture_weights)[0],
                cell=cell,
                dx=round(rng.uniform(-config.max_jitter, config.max_jitter), 4),
                dy=round(rng.uniform(-config.max_jitter, config.max_jitter), 4),
                rotation=round(rng.uniform(-config.max_rotation, config.max_rotation), 2),
            )
        )
    return Scene(scene_id=scene_id, image_size=rng.choice(config.image_sizes), objects=tuple(objects))


def scene_rng(seed: int, purpose: str, key: str) -> random.Random:
    """An independent random stream per (seed, purpose, key).

    Seeding `random.Random` with a str hashes it with SHA-512 (CPython's version-2 seeding), so the stream does not
    depend on PYTHONHASHSEED, on the order scenes are processed in, or on how many scenes are generated.
    """
    return random.Random(f"uniretrieve-scenes/{seed}/{purpose}/{key}")


def sample_scenes(
    n: int,
    *,
    seed: int,
    prefix: str = "scene",
    config: SamplerConfig = SamplerConfig(),
    exclude: set[Signature] | None = None,
) -> list[Scene]:
    """`n` pairwise distinct scenes (by `Scene.signature`) with ids `{prefix}-000000` onward.

    A candidate that repeats an earlier scene (or one in `exclude`, e.g. the test split when drawing the train
    split) is redrawn from the next attempt's stream, so two images never depict the same content — otherwise a
    caption would have two correct images and retrieval scores would lie. Scene i depends only on (seed, prefix, i)
    and the scenes before it, so a longer run extends a shorter one.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    scenes: list[Scene] = []
    seen: set[Signature] = set(exclude or ())
    for i in range(n):
        scene_id = f"{prefix}-{i:06d}"
        for attempt in range(1000):
            scene = sample_scene(scene_rng(seed, f"scene/{attempt}", scene_id), scene_id, config)
            if scene.signature() not in seen:
                break
        else:  # pragma: no cover - needs a vocabulary far too small for n
            raise RuntimeError(f"could not draw a new distinct scene for {scene_id}; enlarge the vocabulary")
        seen.add(scene.signature())
        scenes.append(scene)
    return scenes
