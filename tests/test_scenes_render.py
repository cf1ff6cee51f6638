"""Rendering: stable bytes, objects where the scene says, crops holding exactly their object."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from uniretrieve.scenes.render import (
    SIZE_RADIUS,
    crop_object,
    encode_jpeg,
    encode_png,
    object_box,
    render_scene,
)
from uniretrieve.scenes.spec import BACKGROUND, COLOURS, Scene, SceneObject, sample_scenes


def test_render_is_deterministic_and_sized() -> None:
    for s in sample_scenes(6, seed=9, prefix="r"):
        a, b = render_scene(s), render_scene(s)
        assert a.size == (s.image_size, s.image_size) and 96 <= s.image_size <= 128
        assert encode_png(a) == encode_png(b) and encode_jpeg(a) == encode_jpeg(b)
        with Image.open(io.BytesIO(encode_jpeg(a))) as im:
            assert im.format == "JPEG"


def test_solid_object_colour_at_its_centre_and_empty_cells_are_background() -> None:
    s = Scene(
        "r",
        96,
        (
            SceneObject("square", "blue", "large", "solid", 0),
            SceneObject("circle", "red", "small", "solid", 8),
        ),
    )
    px = np.asarray(render_scene(s)).astype(int)
    assert np.abs(px[16, 16] - COLOURS["blue"]).max() <= 2  # centre of cell 0 (32-px cells)
    assert np.abs(px[80, 80] - COLOURS["red"]).max() <= 2  # centre of cell 8
    for cell in range(1, 8):  # empty cells hold nothing but background
        r, c = divmod(cell, 3)
        block = px[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32]
        assert (np.abs(block - BACKGROUND).max(axis=-1) <= 2).all(), cell


def test_crop_holds_the_whole_object() -> None:
    # The largest shape with the most jitter stays inside its cell, so a crop's border rows are background.
    assert max(SIZE_RADIUS.values()) + 0.08 < 0.5
    for s in sample_scenes(10, seed=4, prefix="crop"):
        img = render_scene(s)
        for o in s.objects:
            crop = np.asarray(crop_object(img, s, o)).astype(int)
            left, top, right, bottom = object_box(s, o)
            assert crop.shape[:2] == (bottom - top, right - left)
            border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
            assert (np.abs(border - BACKGROUND).max(axis=-1) <= 3).mean() > 0.95
            assert (np.abs(crop - BACKGROUND).max(axis=-1) > 30).any()  # the object is there
