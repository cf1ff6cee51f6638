"""Random-weight checkpoints of real MLLM architectures, built from configs of the real transformers classes.

A preset names an architecture (layer counts, widths, vocabulary, image processor) and the device it is meant for.
`build_checkpoint` writes a complete checkpoint directory (config, safetensors, processor, tokenizer) that
`Encoder.from_pretrained` loads like a downloaded one. Weights are random: throughput does not depend on their
values, and the benchmark checks that both code paths agree on the same random model.

The tokenizer is a byte-level BPE trained on the benchmark's caption vocabulary (so a caption word is about one token,
as with a real LLM tokenizer), while the model's `vocab_size` is the real one, so embedding and LM-head costs are
real. Architecture numbers come from the public config.json of each named checkpoint on the Hugging Face hub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.encode_inputs import WORDS

_PROMPT_TEXT = [
    "Summary above sentence in one word:",
    "Summary above image in one word:",
    "Summary above image and sentence in one word:",
    "system You are a helpful assistant. user assistant",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: ASSISTANT:",
    "0123456789 !?.,;:'\"()[]{}<>-_/\\@#$%^&*+=|~`",
]


def build_tokenizer(vocab_size: int = 2000) -> Any:
    """Byte-level BPE with a BOS post-processor (Llama style) and every family's special tokens (tiny/base.py)."""
    from uniretrieve.tiny.base import family_tokenizer

    corpus = [" ".join(WORDS), " ".join(w.capitalize() for w in WORDS), *_PROMPT_TEXT]
    return family_tokenizer(corpus * 50, vocab_size)


def _ids(tok: Any) -> dict[str, int]:
    return {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }


# --- architectures: each returns (model class name, config, processor) for a tokenizer -----------------------------


def _llava(tok: Any, vision: dict[str, Any], text_cls: str, text: dict[str, Any]) -> tuple[str, Any, Any]:
    import transformers

    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**vision),
        text_config=getattr(transformers, text_cls)(**text, **_ids(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    side = vision["image_size"]
    proc = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tok,
        patch_size=vision["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return "LlavaForConditionalGeneration", cfg, proc


def tiny(tok: Any) -> tuple[str, Any, Any]:
    """The test suite's tiny LLaVA: 32-px CLIP, 2-layer 32-wide Llama (`FIXTURE` of tiny/base.py)."""
    from uniretrieve.tiny.base import FIXTURE, llava_parts

    return "LlavaForConditionalGeneration", *llava_parts(FIXTURE, tok)


def llava_100m(tok: Any) -> tuple[str, Any, Any]:
    """LLaVA with a ViT-B/16-style CLIP tower (768 wide, 6 layers, 224 px → 196 image tokens) and an 8-layer
    768-wide Llama with the Llama-2 vocabulary of 32000: 144M parameters, 95M of them outside the embedding and
    LM-head matrices."""
    vision = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
        "projection_dim": 512,
        "hidden_act": "quick_gelu",
    }
    text = {
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    }
    return _llava(tok, vision, "LlamaConfig", text)


# llava-hf/llava-v1.6-mistral-7b-hf config.json: CLIP ViT-L/14-336 (vision_feature_layer -2) + Mistral-7B, anyres.
_LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def llava_next_mistral_7b(tok: Any) -> tuple[str, Any, Any]:
    """LLaVA-1.6-Mistral-7B (7.57B parameters): the UniME-LLaVA-1.6 backbone."""
    import transformers

    cfg = transformers.LlavaNextConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
        ),
        text_config=transformers.MistralConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            sliding_window=None,
            **_ids(tok),
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    proc = transformers.LlavaNextProcessor(
        image_processor=transformers.LlavaNextImageProcessor(
            size={"shortest_edge": 336},
            crop_size={"height": 336, "width": 336},
            image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
        ),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return "LlavaNextForConditionalGeneration", cfg, proc


def _qwen2_vl(tok: Any, text_size: dict[str, int], tied: bool) -> tuple[str, Any, Any]:
    """Qwen2-VL with the given language-model size (the vision tower is the same 675M ViT in every size), images
    capped at 336×336 pixels as UniME-V2 trains it."""
    import transformers

    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>")}
    rope = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}
    text = {
        **text_size,
        "max_position_embeddings": 32768,
        "rope_parameters": rope,
        "tie_word_embeddings": tied,
        "rms_norm_eps": 1e-6,
        **_ids(tok),
    }
    vision = {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": text_size["hidden_size"],
        "num_heads": 16,
        "mlp_ratio": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    cfg = transformers.Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        tie_word_embeddings=tied,
    )
    pix = {
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 56 * 56,
        "max_pixels": 336 * 336,
    }
    proc = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**pix),
        tokenizer=tok,
        video_processor=transformers.Qwen2VLVideoProcessor(**pix),
    )
    return "Qwen2VLForConditionalGeneration", cfg, proc


def qwen2_vl_2b(tok: Any) -> tuple[str, Any, Any]:
    """Qwen2-VL-2B (2.2B parameters, tied embeddings)."""
    size = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28}
    return _qwen2_vl(tok, size | {"num_attention_heads": 12, "num_key_value_heads": 2}, tied=True)


def qwen2_vl_7b(tok: Any) -> tuple[str, Any, Any]:
    """Qwen2-VL-7B (8.3B parameters; Qwen/Qwen2-VL-7B-Instruct config.json): the UniME-V2 Qwen2-VL backbone."""
    size = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28}
    return _qwen2_vl(tok, size | {"num_attention_heads": 28, "num_key_value_heads": 4}, tied=False)


# llava-hf/llava-onevision-qwen2-7b-ov-hf config.json: SigLIP-so400m (26 layers kept) at 384 px + Qwen2-7B.
_OV_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]


def llava_onevision_7b(tok: Any) -> tuple[str, Any, Any]:
    """LLaVA-OneVision-Qwen2-7B (8.0B parameters): the UniME-LLaVA-OneVision backbone, anyres_max_9."""
    import transformers

    cfg = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=26,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
        ),
        text_config=transformers.Qwen2Config(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            **_ids(tok),
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=_OV_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    proc = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(
            size={"height": 384, "width": 384}, image_grid_pinpoints=_OV_PINPOINTS
        ),
        tokenizer=tok,
        video_processor=transformers.LlavaOnevisionVideoProcessor(size={"height": 384, "width": 384}),
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return "LlavaOnevisionForConditionalGeneration", cfg, proc


@dataclass(frozen=True)
class Preset:
    name: str
    make: Callable[[Any], tuple[str, Any, Any]]
    """tokenizer → (transformers model class name, config, processor)."""
    device: str
    """"cpu" or "cuda": where the preset is meant to run."""
    dtype: str
    image_size: tuple[int, int]
    """(width, height) of the benchmark's JPEG files for this preset."""
    about: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", tiny, "cpu", "float32", (640, 480), "tiny LLaVA (test fixture size)"),
        Preset("llava-100m", llava_100m, "cpu", "float32", (640, 480), "LLaVA, ViT-B/16-224 + 8x768 Llama"),
        Preset(
            "llava-next-mistral-7b",
            llava_next_mistral_7b,
            "cuda",
            "bfloat16",
            (336, 336),
            "LLaVA-1.6-Mistral-7B, 336-px images",
        ),
        Preset("qwen2-vl-2b", qwen2_vl_2b, "cuda", "bfloat16", (336, 336), "Qwen2-VL-2B, 336-px images"),
        Preset("qwen2-vl-7b", qwen2_vl_7b, "cuda", "bfloat16", (336, 336), "Qwen2-VL-7B, 336-px images"),
        Preset(
            "llava-onevision-7b",
            llava_onevision_7b,
            "cuda",
            "bfloat16",
            (336, 336),
            "LLaVA-OneVision-7B, 336-px images",
        ),
    )
}


def presets_for(device: str) -> list[str]:
    return [name for name, p in PRESETS.items() if p.device == device]


def parameter_count(preset: Preset) -> int:
    """Parameters of the architecture, counted on the meta device (nothing is allocated); tied weights once."""
    import transformers

    cls_name, cfg, _ = preset.make(build_tokenizer())
    with torch.device("meta"):
        model = getattr(transformers, cls_name)._from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def build_checkpoint(preset: Preset, out_dir: Path, *, device: str = "cpu", seed: int = 0) -> Path:
    """Write a random-weight checkpoint of `preset` to `out_dir`. Weights are initialised on `device` in the
    preset's dtype (a 7B model initialises in seconds on a GPU, minutes on a CPU)."""
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    cls_name, cfg, proc = preset.make(build_tokenizer())
    torch.manual_seed(seed)
    with torch.device(device):
        model = getattr(transformers, cls_name)._from_config(cfg, dtype=getattr(torch, preset.dtype))
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    del model
    return out_dir


def _shrink_config(cfg: Any) -> None:
    """Cut depth and width in place, keeping everything that decides the data path: image geometry, patch and
    merge sizes, vision feature layer, vocabulary, RoPE head size."""
    text = cfg.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = 1, 2, 1
    text.hidden_size, text.intermediate_size, text.head_dim = 2 * head_dim, 4 * head_dim, head_dim
    if getattr(text, "layer_types", None):  # Qwen2 configs list one attention type per layer
        text.layer_types = text.layer_types[:1]
    vision = cfg.vision_config
    if hasattr(vision, "depth"):  # Qwen2-VL's own vision config; its merger projects to the text width
        vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size = 2, 64, 4, text.hidden_size
    else:
        vision.num_hidden_layers, vision.hidden_size, vision.num_attention_heads = 2, 64, 4
        vision.intermediate_size = 128
        if hasattr(vision, "projection_dim"):
            vision.projection_dim = 64


def shrunk(preset: Preset) -> Preset:
    """`preset` cut to a few layers of small width, on the CPU in float32: the GPU presets' processors, token
    counts and model classes run end to end on a machine without a GPU."""

    def make(tok: Any) -> tuple[str, Any, Any]:
        cls_name, cfg, proc = preset.make(tok)
        _shrink_config(cfg)
        return cls_name, cfg, proc

    return Preset(
        f"{preset.name}-shrunk", make, "cpu", "float32", preset.image_size, f"{preset.about} (shrunk)"
    )


def cached_checkpoint(preset: Preset, cache: Path, device: str) -> Path:
    """`build_checkpoint` into `cache/model-<name>`, reused when it is already there."""
    out = cache / f"model-{preset.name}"
    if not (out / "config.json").exists():
        build_checkpoint(preset, out, device=device)
    return out
