"""Builders of tiny, random-weight checkpoints of every supported family, from the real transformers classes.

Each builder writes a complete checkpoint directory (config, safetensors weights, processor, tokenizer) that loads
back with `from_pretrained` exactly like a downloaded one. The tokenizer and the LLaVA come from the one tiny-model
factory (tiny/base.py): a byte-level BPE trained on the fly that carries every special token the families'
processors and chat wrappers use, and its `FIXTURE` sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from uniretrieve.tiny.base import FIXTURE, build_base, family_tokenizer

_CORPUS = [
    "a red circle above a blue square",
    "two green triangles next to a yellow star",
    "Summary above sentence in one word:",
    "Summary above image in one word:",
    "Summary above image and sentence in one word:",
    "Represent the given image for classification.",
    "Find me an everyday image that matches the given caption:",
    "A chat between a curious human and an assistant.",
    "USER: ASSISTANT: system You are a helpful assistant. user assistant User: Assistant:",
    "the quick brown fox jumps over the lazy dog 0123456789 !?.,;:'\"()[]{}<>-_/\\@#$%^&*+=|~`",
]


def build_tokenizer(out_dir: Path | None = None, vocab_size: int = FIXTURE.vocab_size):
    fast = family_tokenizer(_CORPUS * 20, vocab_size)
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def _text(cfg_cls_name: str, vocab: int, **extra):
    import transformers

    kw = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    kw.update(extra)
    return getattr(transformers, cfg_cls_name)(**kw)


VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
"""The vision towers' sizes (CLIP, SigLIP, Idefics3/SmolVLM): 32-px images in 8-px patches."""


def _clip_vision(image_size: int = 32, patch: int = 8):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**{**VISION, "image_size": image_size, "patch_size": patch}, projection_dim=32)


def _save(model, processor, out: Path) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava(out: Path, text_model: str = "LlamaConfig") -> Path:
    model, proc = build_base(replace(FIXTURE, text_model=text_model), build_tokenizer())
    return _save(model, proc, out)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "llava": build_llava,
}


_PINPOINTS = [[32, 32], [32, 64], [64, 32]]


def build_llava_next(out: Path, text_model: str = "MistralConfig") -> Path:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = build_tokenizer()
    cfg = LlavaNextConfig(
        vision_config=_clip_vision(),
        text_config=_text(text_model, len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg)
    proc = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=_PINPOINTS
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return _save(model, proc, out)


def build_llava_onevision(out: Path) -> Path:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    tok = build_tokenizer()
    vision = SiglipVisionConfig(**VISION)
    cfg = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_text("Qwen2Config", len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": 32, "width": 32}, image_grid_pinpoints=_PINPOINTS
        ),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return _save(model, proc, out)


def _build_qwen(out: Path, version: str) -> Path:
    import transformers

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>")}
    # head_dim = 32 / 4 = 8; the three M-RoPE sections (t, h, w) must add up to head_dim / 2.
    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0}
    if version == "qwen2_vl":
        vision = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        }
        cfg_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        proc_cls, img_cls = transformers.Qwen2VLProcessor, transformers.Qwen2VLImageProcessor
        vid_cls = transformers.Qwen2VLVideoProcessor
    else:
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        }
        cfg_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        proc_cls, img_cls = transformers.Qwen2_5_VLProcessor, transformers.Qwen2VLImageProcessor
        vid_cls = transformers.Qwen2VLVideoProcessor
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": rope,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    cfg = cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
    )
    torch.manual_seed(0)
    model = model_cls(cfg)
    pix = {
        "patch_size": 4,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 16 * 16,
        "max_pixels": 48 * 48,
    }
    proc = proc_cls(image_processor=img_cls(**pix), tokenizer=tok, video_processor=vid_cls(**pix))
    return _save(model, proc, out)


def build_qwen2_vl(out: Path) -> Path:
    return _build_qwen(out, "qwen2_vl")


def build_qwen2_5_vl(out: Path) -> Path:
    return _build_qwen(out, "qwen2_5_vl")


def _build_idefics(out: Path, version: str) -> Path:
    import transformers

    tok = build_tokenizer()
    # (32 / 8)^2 patches / scale_factor^2 = 4 image tokens per (sub-)image.
    img_kw = {
        "size": {"longest_edge": 64},
        "max_image_size": {"longest_edge": 32},
        "do_image_splitting": True,
    }
    prefix = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[version]

    def cls(name: str):
        return getattr(transformers, prefix + name)

    cfg = cls("Config")(
        vision_config=cls("VisionConfig")(**VISION),
        text_config=_text("LlamaConfig", len(tok)),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model_cls = cls("ForConditionalGeneration")
    videos = {"video_processor": transformers.SmolVLMVideoProcessor()} if version == "smolvlm" else {}
    proc = cls("Processor")(
        image_processor=cls("ImageProcessor")(**img_kw), tokenizer=tok, image_seq_len=4, **videos
    )
    torch.manual_seed(0)
    return _save(model_cls(cfg), proc, out)


def build_idefics3(out: Path) -> Path:
    return _build_idefics(out, "idefics3")


def build_smolvlm(out: Path) -> Path:
    return _build_idefics(out, "smolvlm")


BUILDERS.update(
    {
        "llava_next": build_llava_next,
        "llava_onevision": build_llava_onevision,
        "qwen2_vl": build_qwen2_vl,
        "qwen2_5_vl": build_qwen2_5_vl,
        "idefics3": build_idefics3,
        "smolvlm": build_smolvlm,
    }
)
