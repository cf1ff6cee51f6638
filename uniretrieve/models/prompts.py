"""Prompt rendering: an Item's text, image and instruction → the string the processor tokenizes.

Two regimes (docs/method.md#prompt-regimes):
- "e5v": the E5-V/UniME "Summary above … in one word:" prompt inside the family's chat wrapper. With no instruction
  the strings equal the official evaluation strings exactly (tested for llava_next and phi3_v).
- "mmeb": VLM2Vec/MMEB raw instruction text, no chat template, `<|image_1|>` mapped to the family's image token.
"""

from __future__ import annotations

from uniretrieve.models.backbones import MMEB_IMAGE_PLACEHOLDER, BackboneSpec, ChatWrapper

PROMPT_REGIMES = ("e5v", "mmeb")

_SUMMARY = {
    "text": "Summary above sentence in one word:",
    "image": "Summary above image in one word:",
    "image_text": "Summary above image and sentence in one word:",
}


def render_e5v(
    spec: BackboneSpec, wrapper: ChatWrapper, *, text: str | None, has_image: bool, instruction: str | None
) -> str:
    """Body = [image token] [instruction line] [text line] summary line, wrapped in the chat dialect.

    The image comes first, as in every official string; an instruction sits between the image and the text so that
    the prompt still ends with the summary request whose last token is pooled.
    """
    modality = "image_text" if has_image and text is not None else ("image" if has_image else "text")
    body = spec.image_token + spec.image_sep if has_image else ""
    if instruction:
        body += instruction + "\n"
    if text is not None:
        body += text + "\n"
    body += _SUMMARY[modality] + wrapper.body_end
    return wrapper.template.replace("{body}", body)


def render_mmeb(spec: BackboneSpec, *, text: str | None, has_image: bool, instruction: str | None) -> str:
    """VLM2Vec-style raw text: `<|image_1|>` → the family's image token; an image-only item gets the token alone."""
    raw = text or ""
    if instruction:
        raw = f"{instruction} {raw}".strip()
    if has_image and MMEB_IMAGE_PLACEHOLDER not in raw and spec.image_token not in raw:
        raw = f"{MMEB_IMAGE_PLACEHOLDER}\n{raw}" if raw else MMEB_IMAGE_PLACEHOLDER
    if not has_image and MMEB_IMAGE_PLACEHOLDER in raw:
        raise ValueError(
            f"the text contains {MMEB_IMAGE_PLACEHOLDER} but the item has no image: {raw[:80]!r}"
        )
    return raw.replace(MMEB_IMAGE_PLACEHOLDER, spec.image_token)


def render(
    spec: BackboneSpec,
    wrapper: ChatWrapper,
    regime: str,
    *,
    text: str | None,
    has_image: bool,
    instruction: str | None = None,
) -> str:
    if regime == "e5v":
        return render_e5v(spec, wrapper, text=text, has_image=has_image, instruction=instruction)
    if regime == "mmeb":
        return render_mmeb(spec, text=text, has_image=has_image, instruction=instruction)
    raise ValueError(f"unknown prompt regime {regime!r}; choose one of {', '.join(PROMPT_REGIMES)}")
