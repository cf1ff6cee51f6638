"""Draw a `Scene` with PIL: deterministic pixels, anti-aliased by supersampling.

Each object is drawn at `SUPERSAMPLE`× resolution (fill pattern through a polygon mask, then a darker outline) and
the canvas is box-averaged down, which anti-aliases edges without any randomness. The same scene always gives the
same pixels, and the PNG/JPEG encoders below write no timestamps, so the bytes are stable too.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from uniretrieve.scenes.spec import BACKGROUND, COLOURS, Scene, SceneObject

SUPERSAMPLE = 4
# Radius of an object's shape as a fraction of the cell width. With the sampler's jitter (≤ 0.08 cell) the largest
# shape stays inside its cell (0.40 + 0.08 < 0.5), so grounding crops of a cell hold exactly one object.
SIZE_RADIUS: dict[str, float] = {"small": 0.20, "medium": 0.30, "large": 0.40}


def _star(n_points: int, inner: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n_points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / n_points
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _regular(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _heart() -> list[tuple[float, float]]:
    # The classic parametric heart, scaled into the unit disc and centred vertically.
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -(y + 2.5) / 17.0))
    return pts


_A, _B = 0.32, 0.92  # cross: half arm width, arm length
# Unit outlines (radius ~1, y down). Circles are drawn as ellipses, not polygons.
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)],
    "triangle": [(x, y + 0.12) for x, y in _regular(3, 1.0, -math.pi / 2)],
    "star": _star(5, 0.45),
    "hexagon": _regular(6, 0.92, 0.0),
    "diamond": [(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)],
    "cross": [
        (-_A, -_B),
        (_A, -_B),
        (_A, -_A),
        (_B, -_A),
        (_B, _A),
        (_A, _A),
        (_A, _B),
        (-_A, _B),
        (-_A, _A),
        (-_B, _A),
        (-_B, -_A),
        (-_A, -_A),
    ],
    "heart": _heart(),
}


def _shade(rgb: tuple[int, int, int], towards: int, amount: float) -> tuple[int, int, int]:
    r, g, b = (round(c + (towards - c) * amount) for c in rgb)
    return (r, g, b)


def _outline_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return _shade(rgb, 0, 0.45)


def _pattern_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # Light tint on colours, light grey on black, so stripes and dots show on every colour.
    return _shade(rgb, 255, 0.6 if sum(rgb) > 150 else 0.7)


def _draw_object(canvas: Image.Image, obj: SceneObject, cell_px: float) -> None:
    rgb = COLOURS[obj.colour]
    radius = SIZE_RADIUS[obj.size] * cell_px
    cx = (obj.col + 0.5 + obj.dx) * cell_px
    cy = (obj.row + 0.5 + obj.dy) * cell_px
    # Local layer covering the object's bounding box (plus outline), so cost does not grow with the canvas.
    half = math.ceil(radius * 1.1) + 2
    x0, y0 = round(cx) - half, round(cy) - half
    side = 2 * half
    lx, ly = cx - x0, cy - y0
    theta = math.radians(obj.rotation)
    cos_t, sin_t = math.cos(theta), math.sin(theta)

    def place(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [
            (lx + radius * (x * cos_t - y * sin_t), ly + radius * (x * sin_t + y * cos_t)) for x, y in points
        ]

    mask = Image.new("L", (side, side), 0)
    mdraw = ImageDraw.Draw(mask)
    ellipse_box = (lx - radius, ly - radius, lx + radius, ly + radius)
    poly = None if obj.shape == "circle" else place(UNIT_POLYGONS[obj.shape])
    if poly is None:
        mdraw.ellipse(ellipse_box, fill=255)
    else:
        mdraw.polygon(poly, fill=255)

    fill = Image.new("RGB", (side, side), rgb)
    if obj.texture != "solid":
        fdraw = ImageDraw.Draw(fill)
        tint = _pattern_colour(rgb)
        period = 4.0 * SUPERSAMPLE  # in final pixels: 4 px stripes/dot spacing stay visible at 96 px
        if obj.texture == "striped":
            width = max(1, round(period / 2))
            k = -side
            while k < side:
                fdraw.line([(k, side), (k + side, 0)], fill=tint, width=width)
                k += period
        else:  # dotted
            dot = 0.3 * period
            y = period / 2
            row = 0
            while y < side:
                x = period / 2 + (period / 2 if row % 2 else 0.0)
                while x < side:
                    fdraw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=tint)
                    x += period
                y += period * 0.87
                row += 1

    layer = canvas.crop((x0, y0, x0 + side, y0 + side))
    layer.paste(fill, (0, 0), mask)
    ldraw = ImageDraw.Draw(layer)
    line = max(2, round(0.06 * radius))
    if poly is None:
        ldraw.ellipse(ellipse_box, outline=_outline_colour(rgb), width=line)
    else:
        ldraw.polygon(poly, outline=_outline_colour(rgb), width=line)
    canvas.paste(layer, (x0, y0))


def render_scene(scene: Scene) -> Image.Image:
    """The scene as an RGB image of `scene.image_size`² pixels."""
    big = scene.image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUND)
    cell_px = big / 3.0
    for obj in scene.in_reading_order():
        _draw_object(canvas, obj, cell_px)
    return canvas.reduce(SUPERSAMPLE)


def object_box(scene: Scene, obj: SceneObject) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the grid cell holding `obj`; it contains the whole object."""
    if obj not in scene.objects:
        raise ValueError(f"object {obj.colour} {obj.shape} is not in scene {scene.scene_id}")
    c = scene.image_size / 3.0
    return (round(obj.col * c), round(obj.row * c), round((obj.col + 1) * c), round((obj.row + 1) * c))


def crop_object(image: Image.Image, scene: Scene, obj: SceneObject) -> Image.Image:
    """The grounding target: the cell of `obj` cut out of the rendered scene."""
    return image.crop(object_box(scene, obj))


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_jpeg(image: Image.Image) -> bytes:
    # 4:4:4 chroma and high quality keep thin stripes and small dots from bleeding colour.
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()
