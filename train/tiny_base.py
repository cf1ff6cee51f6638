"""The untrained `unime-tiny` base: a LLaVA of real transformers classes, sized for a 2-core CPU and ≤ 25 MB.

Architecture (all numbers in `TinyBaseConfig`): a CLIP ViT (112 px, patch 16 → 49 image tokens) and a 2-layer MLP
projector into a Mistral-architecture language model (Mistral rather than Llama so the registry picks the short
`[INST] … [/INST]` wrapper of LLaVA-1.6-Mistral, the backbone of UniME's main results). The tokenizer is a byte-level
BPE trained with `tokenizers` on the generated caption corpus: it covers any text (bytes) and is compact on the
domain's words. Weights ship as float16 safetensors (≈ 13 MB) and load as float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# </s> is not id 2: CLIPTextModel treats eos_token_id == 2 as its legacy "argmax id" pooling (ablation baseline).
SPECIAL_TOKENS = ["<unk>", "<s>", "<pad>", "</s>", "<image>", "[INST]", "[/INST]"]


@dataclass(frozen=True)
class TinyBaseConfig:
    vocab_size: int = 4096
    image_size: int = 112
    patch_size: int = 16
    vision_hidden: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 768
    max_positions: int = 1024
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str]) -> Any:
    """A byte-level BPE trained on `texts`, Llama-style (`<s>` prepended to every sequence).

    `special_tokens` must hold `<unk>`, `<s>`, `<pad>` and `</s>` in its first four places, in any order; the rest
    (image tokens, chat-template markers) become single, never-split tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": list(special_tokens[4:])})
    return fast


def train_tokenizer(texts: Iterable[str], cfg: TinyBaseConfig) -> Any:
    """The tiny base's tokenizer: byte-level BPE on the captions; `[INST]`/`[/INST]` are single tokens."""
    fast = bpe_tokenizer(texts, cfg.vocab_size, SPECIAL_TOKENS)
    fast.padding_side = "left"
    return fast


def build_base(cfg: TinyBaseConfig, tokenizer: Any) -> tuple[Any, Any]:
    """A randomly initialised LlavaForConditionalGeneration and its LlavaProcessor."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        MistralConfig,
    )

    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
    )
    text = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_positions,
        sliding_window=None,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": cfg.image_size},
            crop_size={"height": cfg.image_size, "width": cfg.image_size},
        ),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def save_checkpoint(model: Any, processor: Any, out: Path, *, half: bool = True) -> Path:
    """`save_pretrained` both parts; float16 weights keep the shipped model small (they load back as float32)."""
    import copy

    import torch

    out.mkdir(parents=True, exist_ok=True)
    if half:  # a copy, so the caller's float32 training weights keep their precision
        model = copy.deepcopy(model).to(torch.float16)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
