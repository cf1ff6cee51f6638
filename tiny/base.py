"""The one tiny-model factory: a LLaVA of real transformers classes and its byte-level BPE tokenizer.

It builds the untrained `unime-tiny` base (sized for a 2-core CPU and ≤ 25 MB), and, with other sizes, the test
suite's tiny checkpoints (tests/tiny_models.py) and the benchmarks' `tiny` preset (benchmarks/model_configs.py).

unime-tiny's architecture (the defaults of `TinyBaseConfig`): a CLIP ViT (64 px, patch 16 → 16 image tokens) and a 2-layer MLP
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

FAMILY_SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<image>",
    "<video>",
    "[INST]",
    "[/INST]",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    "<|user|>",
    "<|end|>",
    "<|assistant|>",
    "<|image_1|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]
"""Every special token the supported families' processors and chat wrappers use (random-weight checkpoints of
any family share one tokenizer layout: `<pad>`, `<s>`, `</s>` are ids 0, 1, 2)."""


@dataclass(frozen=True)
class TinyBaseConfig:
    vocab_size: int = 4096
    image_size: int = 64
    """64 px, patch 16: 16 image tokens (a third of 112 px's 49), and the learnability gate's ViT at this size reads
    the scenes (benchmarks/RESULTS.md, the learnability gate)."""
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
    vision_intermediate: int | None = None
    """The ViT's MLP width; None = 4 × vision_hidden."""
    text_kv_heads: int | None = None
    """Key/value heads of the language model; None = text_heads (no grouped-query attention)."""
    text_model: str = "MistralConfig"
    """The transformers config class of the language model (Mistral: the registry's `[INST]` wrapper)."""
    tie_embeddings: bool = True
    vision_feature_layer: int = -2
    """The ViT layer whose tokens the projector reads (LlavaConfig's field of the same name)."""
    vision_feature_select_strategy: str = "default"
    """LLaVA's choice of those tokens: "default" drops the class token, "full" keeps it (one more image token)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def vision_mlp(self) -> int:
        return self.vision_intermediate or 4 * self.vision_hidden


FIXTURE = TinyBaseConfig(
    vocab_size=600,
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_intermediate=64,
    vision_layers=2,
    vision_heads=2,
    text_hidden=32,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=64,
    max_positions=4096,
    text_model="LlamaConfig",
    tie_embeddings=False,
)
"""The smallest LLaVA: the test suite's tiny checkpoint and the benchmarks' `tiny` preset (32-px CLIP, 2-layer
32-wide Llama)."""


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


def family_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """The tokenizer of a random-weight checkpoint of any supported family: byte-level BPE on `texts` with every
    family's special tokens (`FAMILY_SPECIAL_TOKENS`)."""
    return bpe_tokenizer(texts, vocab_size, FAMILY_SPECIAL_TOKENS)


def train_tokenizer(texts: Iterable[str], cfg: TinyBaseConfig) -> Any:
    """The tiny base's tokenizer: byte-level BPE on the captions; `[INST]`/`[/INST]` are single tokens."""
    fast = bpe_tokenizer(texts, cfg.vocab_size, SPECIAL_TOKENS)
    fast.padding_side = "left"
    return fast


def vision_config(cfg: TinyBaseConfig, **extra: Any) -> Any:
    """A CLIPVisionConfig with `cfg`'s vision-tower sizes (the tiny LLaVA and the CLIP baseline share the tower)."""
    import transformers

    return transformers.CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_mlp,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        **extra,
    )


def llava_parts(cfg: TinyBaseConfig, tokenizer: Any) -> tuple[Any, Any]:
    """The LlavaConfig and LlavaProcessor of a tiny LLaVA with `cfg`'s sizes around `tokenizer`."""
    import transformers

    vision = vision_config(cfg, projection_dim=cfg.vision_hidden)
    extra: dict[str, Any] = {"tie_word_embeddings": True} if cfg.tie_embeddings else {}
    if cfg.text_model == "MistralConfig":
        extra["sliding_window"] = None  # attend to the whole sequence
    text = getattr(transformers, cfg.text_model)(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads or cfg.text_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )
    config = transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        vision_feature_layer=cfg.vision_feature_layer,
        **({"tie_word_embeddings": True} if cfg.tie_embeddings else {}),
    )
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(
            size={"shortest_edge": cfg.image_size},
            crop_size={"height": cfg.image_size, "width": cfg.image_size},
        ),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        num_additional_image_tokens=1,
    )
    return config, processor


def build_base(cfg: TinyBaseConfig, tokenizer: Any) -> tuple[Any, Any]:
    """A randomly initialised LlavaForConditionalGeneration (seeded by `cfg.seed`) and its LlavaProcessor."""
    import torch
    from transformers import LlavaForConditionalGeneration

    config, processor = llava_parts(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    return LlavaForConditionalGeneration(config), processor


def save_llava(model: Any, processor: Any, out: Path, *, half: bool = True) -> Path:
    """`save_pretrained` both parts; float16 weights keep the shipped model small (they load back as float32)."""
    import copy

    import torch

    out.mkdir(parents=True, exist_ok=True)
    if half:  # a copy, so the caller's float32 training weights keep their precision
        model = copy.deepcopy(model).to(torch.float16)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
