"""Loading checkpoints and images: clear errors, EXIF, LoRA adapters merged exactly, truncation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_image
from uniretrieve import Encoder, Item
from uniretrieve.models.backbones import UnsupportedModelError
from uniretrieve.models.images import ImageLoadError, load_image
from uniretrieve.models.loading import ModelLoadError


def test_missing_and_invalid_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Encoder.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        Encoder.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid transformers config"):
        Encoder.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip2"}))
    with pytest.raises(UnsupportedModelError, match="blip2"):
        Encoder.from_pretrained(str(tmp_path))


def test_bad_images_are_named(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file") as e:
        load_image(tmp_path / "missing.png")
    assert e.value.path.endswith("missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="0 bytes"):
        load_image(tmp_path / "empty.jpg")
    good = tmp_path / "good.png"
    make_image(0, (40, 40)).save(good)
    (tmp_path / "torn.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError, match=r"torn\.png"):
        load_image(tmp_path / "torn.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageLoadError, match=r"text\.jpg"):
        load_image(tmp_path / "text.jpg")


def test_exif_orientation_grayscale_and_gif_first_frame(tmp_path: Path) -> None:
    im = make_image(5, (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    Image.new("L", (10, 12), 128).save(tmp_path / "gray.png")
    g = load_image(tmp_path / "gray.png")
    assert g.mode == "RGB" and g.size == (10, 12)
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").getpixel((0, 0))[0] > 200


def test_encode_images_from_paths_equals_pil_and_fails_naming_the_file(tiny_model_dir, image_files) -> None:
    enc = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    from_paths = enc.encode_images([str(p) for p in image_files])
    from_pil = enc.encode_images([Image.open(p).convert("RGB") for p in image_files])
    np.testing.assert_allclose(from_paths, from_pil, atol=1e-5)
    with pytest.raises(ImageLoadError, match=r"gone\.png"):
        enc.encode_images([str(image_files[0]), str(image_files[0].parent / "gone.png")])


def test_long_text_is_truncated_keeping_the_summary_line(tiny_model_dir) -> None:
    enc = Encoder.from_pretrained(str(tiny_model_dir), device="cpu", max_text_tokens=8)
    long = " ".join(f"word{i}" for i in range(200))
    cut, was_cut = enc.truncate_text(long)
    assert was_cut and len(cut) < len(long)
    assert enc.truncate_text("short")[1] is False
    prompt, _ = enc.input_builder.prompt(Item(text=long))
    assert "word199" not in prompt and "\nSummary above sentence in one word:" in prompt
    batch = enc.input_builder([Item(text=long), Item(text="short")])
    assert batch.truncated == 1


def test_lora_adapter_is_merged_and_matches_the_unmerged_model(tiny_model_dir, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    texts = ["a red circle", "two blue squares and a star"]
    images = [make_image(7, (48, 40))]
    torch.manual_seed(0)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=list(base.spec.lora_targets), init_lora_weights=False
    )  # random B: the adapter really changes the model
    peft_model = get_peft_model(base.model, cfg)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    with torch.inference_mode():
        unmerged_t = base.encode_texts(texts)
        unmerged_i = base.encode_images(images)

    merged = Encoder.from_pretrained(str(tiny_model_dir), device="cpu", adapter=str(adapter_dir))
    plain = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    np.testing.assert_allclose(merged.encode_texts(texts), unmerged_t, atol=1e-4)
    np.testing.assert_allclose(merged.encode_images(images), unmerged_i, atol=1e-4)
    assert np.abs(plain.encode_texts(texts) - unmerged_t).max() > 1e-3  # the adapter mattered
    assert merged.weight_hash != plain.weight_hash
    assert merged.describe()["adapter"] == str(adapter_dir)
    with pytest.raises(ModelLoadError, match="not a LoRA adapter"):
        Encoder.from_pretrained(str(tiny_model_dir), adapter=str(tmp_path))


def test_describe_is_json_and_stable(tiny_model_dir) -> None:
    a = Encoder.from_pretrained(str(tiny_model_dir), device="cpu")
    b = Encoder.from_pretrained(str(tiny_model_dir), device="cpu", prompt_regime="mmeb")
    da, db = a.describe(), b.describe()
    json.dumps(da)
    assert da["weight_hash"] == db["weight_hash"] and da["prompt_regime"] != db["prompt_regime"]
    assert da["dim"] == a.dim == a.encode_texts(["x"]).shape[1]


def test_processor_settings_from_registry_and_caller_reach_the_processor(tiny_checkpoints) -> None:
    path = str(tiny_checkpoints("qwen2_vl"))
    enc = Encoder.from_pretrained(path, device="cpu")
    # the registry's bound beats the checkpoint's (transformers 5 keeps max_pixels as size.longest_edge)
    assert enc.processor.image_processor.size.longest_edge == 336 * 336
    small = Encoder.from_pretrained(
        path, device="cpu", processor_kwargs={"size": {"longest_edge": 16 * 16, "shortest_edge": 8 * 8}}
    )
    assert small.describe()["processor_kwargs"] == {"size": {"longest_edge": 256, "shortest_edge": 64}}
    big_img = make_image(3, (64, 64))
    n_default = enc.input_builder([Item(image=big_img)]).inputs["input_ids"].shape[1]
    n_small = small.input_builder([Item(image=big_img)]).inputs["input_ids"].shape[1]
    assert n_small < n_default


def test_a_shipped_name_without_weights_says_how_to_build_them(monkeypatch) -> None:
    from uniretrieve.models import names

    monkeypatch.setitem(
        names.REGISTERED_MODELS,
        "toy-tiny",
        names.RegisteredModel("weights/toy-tiny", "llava", "t", shipped=True),
    )
    with pytest.raises(ModelLoadError, match="uniretrieve train toy-tiny"):
        Encoder.from_pretrained("toy-tiny")
