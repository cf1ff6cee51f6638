"""Prompt strings: the official UniME/E5-V evaluation strings exactly, instructions, MMEB raw text."""

from __future__ import annotations

import pytest

from uniretrieve.models.backbones import (
    REGISTRY,
    UnsupportedModelError,
    spec_for_model_type,
    supported_families,
)
from uniretrieve.models.prompts import render


def _wrapper(family: str, name: str):
    return next(w for w in REGISTRY[family].chat_wrappers if w.name == name)


# Exact strings from deepglint/UniME self_evaluate (= E5-V retrieval.py), docs/method.md#chat-templates.
OFFICIAL = [
    ("llava_next", "mistral", None, True, "[INST] <image>\nSummary above image in one word: [/INST]"),
    ("llava_next", "mistral", "a dog", False, "[INST] a dog\nSummary above sentence in one word: [/INST]"),
    (
        "phi3_v",
        "phi3",
        None,
        True,
        "<|user|>\n<|image_1|>\nSummary above image in one word:<|end|>\n<|assistant|>\n",
    ),
    (
        "phi3_v",
        "phi3",
        "a dog",
        False,
        "<|user|>\na dog\nSummary above sentence in one word:<|end|>\n<|assistant|>\n",
    ),
    (
        "llava_next",
        "llama3",
        "a dog",
        False,
        "<|start_header_id|>user<|end_header_id|>\n\na dog\nSummary above sentence in one word: <|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n \n",
    ),
]


@pytest.mark.parametrize(("family", "wrapper", "text", "image", "expected"), OFFICIAL)
def test_official_prompt_strings(family, wrapper, text, image, expected) -> None:
    spec = REGISTRY[family]
    got = render(spec, _wrapper(family, wrapper), "e5v", text=text, has_image=image)
    assert got == expected


def test_instruction_goes_between_image_and_text_and_prompt_still_ends_with_summary() -> None:
    spec = REGISTRY["llava_next"]
    got = render(
        spec,
        _wrapper("llava_next", "mistral"),
        "e5v",
        text="a cat",
        has_image=True,
        instruction="Find the image.",
    )
    assert (
        got == "[INST] <image>\nFind the image.\na cat\nSummary above image and sentence in one word: [/INST]"
    )


def test_mmeb_regime_maps_placeholder_to_family_image_token() -> None:
    for family in ("llava_next", "qwen2_vl", "phi3_v"):
        spec = REGISTRY[family]
        got = render(
            spec,
            spec.chat_wrappers[0],
            "mmeb",
            text="<|image_1|>\nRepresent the given image.",
            has_image=True,
        )
        assert got == f"{spec.image_token}\nRepresent the given image."
    with pytest.raises(ValueError, match="no image"):
        render(
            REGISTRY["llava"],
            REGISTRY["llava"].chat_wrappers[0],
            "mmeb",
            text="<|image_1|> x",
            has_image=False,
        )


def test_unknown_regime_and_unsupported_model_type_are_named() -> None:
    spec = REGISTRY["llava"]
    with pytest.raises(ValueError, match="unknown prompt regime 'clip'"):
        render(spec, spec.chat_wrappers[0], "clip", text="x", has_image=False)
    with pytest.raises(UnsupportedModelError) as exc:
        spec_for_model_type("blip2", source="/models/blip")
    msg = str(exc.value)
    assert "blip2" in msg and "/models/blip" in msg
    for family in supported_families():
        assert family in msg


def test_registry_is_complete_data() -> None:
    expected = {
        "llava",
        "llava_next",
        "llava_onevision",
        "qwen2_vl",
        "qwen2_5_vl",
        "idefics3",
        "smolvlm",
        "phi3_v",
    }
    assert set(supported_families()) == expected
    for family, spec in REGISTRY.items():
        assert spec.family == family
        assert spec.image_token and spec.lora_targets and spec.chat_wrappers
        assert spec.padding_side in ("left", "right")
        for w in spec.chat_wrappers:
            assert "{body}" in w.template
