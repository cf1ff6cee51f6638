"""`uniretrieve demo`: the whole pipeline on a generated corpus — scenes → shards → FAISS index → hits.

Each step is the library call behind the matching command (`scenes generate`, `encode`, `index build`, `search`),
so the demo is also a map of the Python API. The corpus is drawn from a seed the built-in model never saw in
training (`DEMO_SEED`), and every step resumes: a second run reuses what the first one wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniretrieve.config import no_cli, opt, trust_remote_code_opt

DEMO_SEED = 20261125
"""Scenes for the demo come from this seed; unime-tiny trains on seed 0 and is scored on seed 1."""
DEFAULT_MODEL = "unime-tiny"


@dataclass
class DemoConfig:
    work: str = field(
        default="uniretrieve-demo",
        metadata=opt(
            "Folder for the corpus, shards and index (reused).", "--output", "-o", deprecated=("--work",)
        ),
    )
    model: str = field(
        default=DEFAULT_MODEL, metadata=opt("Checkpoint, hub id or registered name.", "--model", "-m")
    )
    scenes: int = field(default=2000, metadata=opt("Generated scenes (images) to index."))
    k: int = field(default=5, metadata=opt("Hits shown per query.", "-k"))
    batch_size: int = field(default=32, metadata=opt("Encoding batch size."))
    trust_remote_code: bool = field(default=False, metadata=trust_remote_code_opt())
    seed: int = field(default=DEMO_SEED, metadata=no_cli())

    def __post_init__(self) -> None:
        if self.scenes < 1 or self.k < 1 or self.batch_size < 1:
            raise ValueError(
                f"--scenes, -k and --batch-size must be >= 1, got {self.scenes}, {self.k}, {self.batch_size}"
            )


@dataclass
class DemoQuery:
    title: str
    text: str | None = None
    image: str | None = None
    expected: str | None = None
    """The id of the image the query describes (its rank is reported)."""
    ranks_below: str | None = None
    """The title of an earlier query that should rank `expected` higher than this one (the swapped caption's
    true caption)."""


def generate_corpus(cfg: DemoConfig, console: Any) -> Path:
    from uniretrieve.scenes.generate import GenerateConfig, generate

    out = Path(cfg.work) / "corpus"
    console.print(f"[bold]1. corpus[/]  {cfg.scenes} generated scenes (seed {cfg.seed}) → {out}")
    generate(
        GenerateConfig(
            out=str(out),
            seed=cfg.seed,
            train_scenes=0,
            test_scenes=cfg.scenes,
            layouts=("short", "urban1k", "sugarcrepe"),
        )
    )
    return out


def encode_images(cfg: DemoConfig, corpus: Path, console: Any) -> Path:
    from uniretrieve.embed.config import EncodeConfig
    from uniretrieve.embed.pipeline import encode_corpus

    out = Path(cfg.work) / "embeddings"
    console.print(f"[bold]2. encode[/]  the images with {cfg.model} → {out}")
    encode_corpus(
        EncodeConfig(
            input=str(corpus / "urban1k" / "image"),
            output=str(out),
            model=cfg.model,
            batch_size=cfg.batch_size,
            trust_remote_code=cfg.trust_remote_code,
            progress=True,
        )
    )
    return out


def build(cfg: DemoConfig, shards: Path, console: Any) -> Path:
    from uniretrieve.index.build import build_index
    from uniretrieve.index.meta import BuildConfig, read_meta
    from uniretrieve.index.source import ShardSource
    from uniretrieve.index.store import has_index

    out = Path(cfg.work) / "index"
    console.print(f"[bold]3. index[/]   {out}")
    source = ShardSource(shards)
    if has_index(out):
        meta = read_meta(out).to_dict()
        if meta.get("num_vectors") == source.num_rows:
            console.print("   (already built)")
            return out
    build_index(
        source,
        out,
        BuildConfig(),
        overwrite=True,
        source_info={"dirs": [str(shards.resolve())]},
        log=lambda msg: console.print(f"   {msg}"),
    )
    return out


def demo_queries(corpus: Path, rows: list[dict[str, Any]]) -> list[DemoQuery]:
    """A short caption, a long caption, a compositional pair (true and swapped attributes), an image query."""
    swap = json.loads((corpus / "sugarcrepe" / "swap_att.json").read_text())
    item = next(iter(swap.values()))
    target = Path(item["filename"]).stem
    scene = rows[1]["scene_id"]
    long_text = (corpus / "urban1k" / "caption" / f"{scene}.txt").read_text().strip()
    short = _short_captions(corpus)[1][0]  # E5-V layout: row i holds image i's five captions
    return [
        DemoQuery("short caption", text=short, expected=scene),
        DemoQuery("long caption", text=long_text, expected=scene),
        DemoQuery("compositional: true caption", text=item["caption"], expected=target),
        DemoQuery(
            "compositional: attributes swapped",
            text=item["negative_caption"],
            expected=target,
            ranks_below="compositional: true caption",
        ),
        DemoQuery(
            "image query",
            image=str(corpus / "urban1k" / "image" / f"{rows[2]['scene_id']}.jpg"),
            expected=rows[2]["scene_id"],
        ),
    ]


def scene_summary(scene: dict[str, Any]) -> str:
    """The generator's ground truth of a scene, to judge a hit by: "small red circle, large striped blue star"."""
    return ", ".join(
        " ".join(
            w
            for w in (o["size"], "" if o["texture"] == "solid" else o["texture"], o["colour"], o["shape"])
            if w
        )
        for o in scene["objects"]
    )


def _short_captions(corpus: Path) -> list[list[str]]:
    import pyarrow.parquet as pq

    (path,) = sorted((corpus / "short" / "data").glob("test-*.parquet"))
    return pq.read_table(path, columns=["text"]).column("text").to_pylist()


def run_demo(cfg: DemoConfig, *, console: Any | None = None) -> list[dict[str, Any]]:
    """Run every step and print the hits; returns, per query, the hits and the rank of the described image."""
    from rich.console import Console
    from rich.table import Table

    from uniretrieve.search.searcher import Searcher

    console = console or Console()
    _quiet_loading()
    corpus = generate_corpus(cfg, console)
    shards = encode_images(cfg, corpus, console)
    index_dir = build(cfg, shards, console)
    searcher = Searcher.load(index_dir, trust_remote_code=cfg.trust_remote_code)
    rows = [json.loads(line) for line in (corpus / "scenes" / "test.jsonl").read_text().splitlines()]
    contents = {r["scene_id"]: scene_summary(r) for r in rows}
    console.print(f"[bold]4. search[/]  {searcher.meta.num_vectors} images, top {cfg.k}")
    report = []
    for q in demo_queries(corpus, rows):
        if q.text is not None:
            (hits,) = searcher.search(texts=[q.text], k=searcher.meta.num_vectors)
        else:
            (hits,) = searcher.search(images=[q.image], k=searcher.meta.num_vectors)
        ids = [Path(h.id).stem for h in hits]
        rank = ids.index(q.expected) + 1 if q.expected in ids else None
        shown = q.text if q.text is not None else q.image
        table = Table(
            title=f"{q.title}: {shown[:100]}{'…' if len(shown) > 100 else ''}", title_justify="left"
        )
        for col in ("rank", "score", "image", "what it shows"):
            table.add_column(col)
        for h in hits[: cfg.k]:
            stem = Path(h.id).stem
            style = "bold green" if stem == q.expected else None  # the described image, when it is shown
            table.add_row(str(h.rank), f"{h.score:.3f}", h.id, contents.get(stem, ""), style=style)
        console.print(table)
        console.print(f"   {verdict(q, rank, len(hits), cfg.k, report)}")
        report.append(
            {
                "query": q.title,
                "text": q.text,
                "image": q.image,
                "expected": q.expected,
                "rank": rank,
                "hits": [h.to_dict() for h in hits[: cfg.k]],
            }
        )
    summary = Table(title="what the model found", title_justify="left")
    for col in ("query", "rank of the described image", f"in the top {cfg.k}"):
        summary.add_column(col)
    for r in report:
        summary.add_row(r["query"], f"{r['rank']} of {searcher.meta.num_vectors}", _yes(r["rank"], cfg.k))
    console.print(summary)
    console.print(
        "\nThe same pipeline with a real checkpoint (a machine with the hub and a GPU):\n"
        "  uniretrieve encode photos/ --output emb/photos --model DeepGlint-AI/UniME-LLaVA-OneVision-7B\n"
        "  uniretrieve index build emb/photos --output idx/photos\n"
        '  uniretrieve search "a dog catching a frisbee" --index idx/photos'
    )
    console.print(
        "\nServe this index (search API and web page at http://127.0.0.1:8000/):\n  "
        + serve_command(index_dir, cfg.model),
        markup=False,
        soft_wrap=True,
    )
    return report


def _yes(rank: int | None, k: int) -> str:
    return "yes" if rank is not None and rank <= k else "no"


def verdict(q: DemoQuery, rank: int | None, n: int, k: int, earlier: list[dict[str, Any]]) -> str:
    """One line under a query's hits: found or not, at which rank; for the swapped caption, whether it ranks the
    image below the true caption (as a model that reads attribute binding should)."""
    where = f"the described image ranks {rank} of {n}"
    if q.ranks_below is not None:
        true = next((r["rank"] for r in earlier if r["query"] == q.ranks_below), None)
        if rank is not None and true is not None:
            better = (
                "lower than for the true caption, as it should"
                if rank > true
                else "not below the true caption's"
            )
            return f"{where}: {better} ({true})"
        return where
    return f"{'✓ found' if rank is not None and rank <= k else '✗ not in the top ' + str(k)}: {where}"


def _quiet_loading() -> None:
    """No per-weight progress bar from transformers between the demo's steps."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def serve_command(index_dir: Path, model: str = DEFAULT_MODEL) -> str:
    """The one command that serves the demo's index. For the built-in model it carries the setting measured fastest
    on a 2-core CPU (docs/serving.md#throughput): two encoder threads of one BLAS thread each, and bfloat16 where
    the CPU computes it natively (emulated bfloat16 is slower than float32)."""
    import shlex

    from uniretrieve.tiny.cpu import bf16_supported

    cmd = f"uniretrieve serve --index {shlex.quote(str(index_dir))}"
    if model != DEFAULT_MODEL:
        return cmd
    fast = " --model-threads 1 --model-workers 2"
    return cmd + fast + (" --model-dtype bfloat16" if bf16_supported() else "")
