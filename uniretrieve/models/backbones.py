"""The backbone registry: every difference between MLLM families, as data, in one place.

Nothing outside this module may branch on a family name. Code reads the fields of a `BackboneSpec` instead:
which transformers classes to load, where the base forward (no LM head) lives, how a prompt is wrapped, which
token stands for an image, how the processor wants its images, which modules form the language model and which
the vision side, and where LoRA goes.

Prompt facts and their sources: docs/method.md#chat-templates (UniME self_evaluate strings, E5-V
retrieval.py) and docs/method.md#prompt-regimes (MMEB/VLM2Vec image placeholder `<|image_1|>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Projection names of the decoder blocks (Llama, Mistral, Qwen2): every linear layer of attention and MLP, as E5-V
# and VLM2Vec target them (docs/method.md#stage-1-settings).
LLAMA_LIKE_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_LINEAR = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class ChatWrapper:
    """How one chat dialect wraps a prompt body.

    `template` holds `{body}`. `body_end` is appended to the body (LLaVA-OneVision's official prompt ends its text
    with "\\n"; E5-V's Llama-3 prompt with a space). A wrapper applies when the text model's `model_type` is in
    `text_model_types` or the tokenizer knows `marker_token`; a wrapper with neither is the family default.
    """

    name: str
    template: str
    body_end: str = ""
    text_model_types: tuple[str, ...] = ()
    marker_token: str | None = None


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the encoder and the trainer need to know about one MLLM family."""

    family: str
    model_types: tuple[str, ...]
    """Values of `config.model_type` that belong to this family."""
    model_class: str
    """transformers class (or, with remote code, the Auto class) that loads a full checkpoint."""
    processor_class: str
    chat_wrappers: tuple[ChatWrapper, ...]
    """E5-V regime wrappers; the first whose condition matches wins, the last is the default."""
    image_token: str
    """The text that stands for one image in a prompt before the processor expands it."""
    base_attr: str = "model"
    """Attribute of the loaded model holding the base forward (last hidden state, no LM head)."""
    language_model_path: str = "model.language_model"
    """Dotted path (from the full model) of the decoder: stage 1 trains only this; LoRA targets live under it."""
    vision_module_paths: tuple[str, ...] = ("model.vision_tower", "model.multi_modal_projector")
    """Vision tower and projector: frozen in stage 1, optionally LoRA-tuned in stage 2."""
    image_sep: str = "\n"
    """What follows the image token inside the body ("" where the family's template glues text to the image)."""
    padding_side: str = "left"
    """Padding side used for batches; the official reference indexes position -1, which needs left padding."""
    lora_targets: tuple[str, ...] = LLAMA_LIKE_LINEAR
    vision_lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    default_image_size: int = 336
    """Training resolution (the paper resizes to 336x336, docs/method.md#image-settings)."""
    max_text_tokens: int = 512
    """Text longer than this (in tokens, before wrapping) is truncated so the prompt's end survives."""
    images_nested: bool = False
    """The processor wants `images=[[img], [img], ...]` (one list per sample) rather than a flat list."""
    max_image_batch: int | None = None
    """Largest batch of image items the processor accepts (Phi-3.5-V's official code asserts 1)."""
    trust_remote_code: bool = False
    processor_kwargs: dict[str, object] = field(default_factory=dict)
    """Passed to `AutoProcessor.from_pretrained` (overriding the checkpoint's values); `Encoder.from_pretrained(...,
    processor_kwargs=...)` overrides these in turn."""
    examples: tuple[str, ...] = ()
    """Public checkpoints of this family, for `uniretrieve models`."""

    def wrapper_for(self, text_model_type: str | None, vocab: set[str] | frozenset[str]) -> ChatWrapper:
        for w in self.chat_wrappers:
            if text_model_type is not None and text_model_type in w.text_model_types:
                return w
            if w.marker_token is not None and w.marker_token in vocab:
                return w
        return self.chat_wrappers[-1]


MMEB_IMAGE_PLACEHOLDER = "<|image_1|>"
"""VLM2Vec/MMEB data always writes the image as `<|image_1|>` (Phi style); it maps to each family's image token."""

# --- the families ------------------------------------------------------------------------------------------------

_VICUNA = ChatWrapper(
    "vicuna",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: {body} ASSISTANT:",
)
# Exact UniME/E5-V strings for LLaVA-1.6-Mistral: "[INST] <image>\nSummary above image in one word: [/INST]".
_MISTRAL = ChatWrapper("mistral", "[INST] {body} [/INST]", text_model_types=("mistral",))
# E5-V's Llama-3 template (retrieval.py), body ends with a space: "<image>\nSummary above image in one word: ".
_LLAMA3 = ChatWrapper(
    "llama3",
    "<|start_header_id|>user<|end_header_id|>\n\n{body}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
    body_end=" ",
    marker_token="<|start_header_id|>",
)
_CHATML = ChatWrapper("chatml", "<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n", body_end="\n")
_QWEN2_VL = ChatWrapper(
    "qwen2_vl",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{body}<|im_end|>\n"
    "<|im_start|>assistant\n",
)
_IDEFICS3 = ChatWrapper("idefics3", "User:{body}<end_of_utterance>\nAssistant:")
# Exact UniME string for Phi-3.5-V: '<|user|>\n<|image_1|>\nSummary above image in one word:<|end|>\n<|assistant|>\n'.
_PHI3 = ChatWrapper("phi3", "<|user|>\n{body}<|end|>\n<|assistant|>\n")

# Qwen2-VL pixel bounds: at most 336x336 pixels per image (≈144 merged tokens), the resolution UniME trains at
# (docs/method.md#image-settings) — the checkpoints' default (12.8 MP) gives thousands of image tokens per photo;
# at least 56x56, Qwen's own minimum. transformers 5 spells them as `size` (longest_edge = max_pixels).
_QWEN_PIXELS: dict[str, object] = {"size": {"longest_edge": 336 * 336, "shortest_edge": 56 * 56}}

_SPECS = (
    BackboneSpec(
        family="llava",
        model_types=("llava",),
        model_class="LlavaForConditionalGeneration",
        processor_class="LlavaProcessor",
        chat_wrappers=(_MISTRAL, _LLAMA3, _VICUNA),
        image_token="<image>",
        examples=("llava-hf/llava-1.5-7b-hf", "royokong/e5-v"),
    ),
    BackboneSpec(
        family="llava_next",
        model_types=("llava_next",),
        model_class="LlavaNextForConditionalGeneration",
        processor_class="LlavaNextProcessor",
        chat_wrappers=(_MISTRAL, _LLAMA3, _VICUNA),
        image_token="<image>",
        vision_module_paths=("model.vision_tower", "model.multi_modal_projector", "model.image_newline"),
        examples=(
            "DeepGlint-AI/UniME-LLaVA-1.6-7B",
            "llava-hf/llava-v1.6-mistral-7b-hf",
            "llava-hf/llava-v1.6-vicuna-7b-hf",
            "llava-hf/llama3-llava-next-8b-hf",
        ),
    ),
    BackboneSpec(
        family="llava_onevision",
        model_types=("llava_onevision",),
        model_class="LlavaOnevisionForConditionalGeneration",
        processor_class="LlavaOnevisionProcessor",
        # UniME's OneVision example renders user[{image}, {text: "Summary above image in one word:\n"}] through the
        # Qwen2 ChatML template (docs/method.md#chat-templates), hence body_end="\n".
        chat_wrappers=(_CHATML,),
        image_token="<image>",
        vision_module_paths=("model.vision_tower", "model.multi_modal_projector", "model.image_newline"),
        examples=("DeepGlint-AI/UniME-LLaVA-OneVision-7B", "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
    ),
    BackboneSpec(
        family="qwen2_vl",
        model_types=("qwen2_vl",),
        model_class="Qwen2VLForConditionalGeneration",
        processor_class="Qwen2VLProcessor",
        chat_wrappers=(_QWEN2_VL,),
        image_token="<|vision_start|><|image_pad|><|vision_end|>",
        image_sep="",
        vision_module_paths=("model.visual",),
        vision_lora_targets=("qkv", "proj", "fc1", "fc2"),
        processor_kwargs=_QWEN_PIXELS,
        examples=("Qwen/Qwen2-VL-2B-Instruct", "GaryGuTC/UniME-V2-Qwen2VL-2B"),
    ),
    BackboneSpec(
        family="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        model_class="Qwen2_5_VLForConditionalGeneration",
        processor_class="Qwen2_5_VLProcessor",
        chat_wrappers=(_QWEN2_VL,),
        image_token="<|vision_start|><|image_pad|><|vision_end|>",
        image_sep="",
        vision_module_paths=("model.visual",),
        vision_lora_targets=("qkv", "proj", "gate_proj", "up_proj", "down_proj"),
        processor_kwargs=_QWEN_PIXELS,
        examples=("Qwen/Qwen2.5-VL-3B-Instruct",),
    ),
    BackboneSpec(
        family="idefics3",
        model_types=("idefics3",),
        model_class="Idefics3ForConditionalGeneration",
        processor_class="Idefics3Processor",
        chat_wrappers=(_IDEFICS3,),
        image_token="<image>",
        image_sep="",
        language_model_path="model.text_model",
        vision_module_paths=("model.vision_model", "model.connector"),
        vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        images_nested=True,
        examples=("HuggingFaceM4/Idefics3-8B-Llama3",),
    ),
    BackboneSpec(
        family="smolvlm",
        model_types=("smolvlm",),
        model_class="SmolVLMForConditionalGeneration",
        processor_class="SmolVLMProcessor",
        chat_wrappers=(_IDEFICS3,),
        image_token="<image>",
        image_sep="",
        language_model_path="model.text_model",
        vision_module_paths=("model.vision_model", "model.connector"),
        images_nested=True,
        examples=("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct"),
    ),
    BackboneSpec(
        family="phi3_v",
        model_types=("phi3_v",),
        model_class="AutoModelForCausalLM",
        processor_class="AutoProcessor",
        chat_wrappers=(_PHI3,),
        image_token="<|image_1|>",
        # Phi3VForCausalLM (remote code) keeps its decoder and the image embedder in one Phi3VModel.
        language_model_path="model.layers",
        vision_module_paths=("model.vision_embed_tokens",),
        lora_targets=PHI3_LINEAR,
        vision_lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        trust_remote_code=True,
        max_image_batch=1,
        # VLM2Vec/UniME run Phi-3.5-V with num_crops=4 (docs/method.md#image-settings).
        processor_kwargs={"num_crops": 4},
        examples=("DeepGlint-AI/UniME-Phi3.5-V-4.2B", "microsoft/Phi-3.5-vision-instruct"),
    ),
)

REGISTRY: dict[str, BackboneSpec] = {s.family: s for s in _SPECS}
_BY_MODEL_TYPE: dict[str, BackboneSpec] = {mt: s for s in _SPECS for mt in s.model_types}


class UnsupportedModelError(ValueError):
    """A checkpoint whose `model_type` no registered family covers."""


def supported_families() -> list[str]:
    return list(REGISTRY)


def spec_for_model_type(model_type: str, *, source: str = "") -> BackboneSpec:
    """The spec for a `config.model_type`, or a clear error listing what is supported."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        where = f" ({source})" if source else ""
        raise UnsupportedModelError(
            f"model_type {model_type!r}{where} is not a supported MLLM family. Supported families: "
            + ", ".join(f"{s.family} (model_type {'/'.join(s.model_types)})" for s in _SPECS)
            + ". Run `uniretrieve models` for example checkpoints."
        ) from None
