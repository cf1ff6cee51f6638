"""`uniretrieve index build|add`: FAISS indexes over embedding shards (library: uniretrieve.index)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Build FAISS indexes over embedding shards, or add shards to one.", no_args_is_help=True
)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command("build")
def build(
    shards: Annotated[
        list[Path], typer.Argument(help="Embedding shard directories (made by `uniretrieve encode`).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
    index_type: Annotated[str, typer.Option("--type", help="auto | flat | ivf | ivfpq | hnsw.")] = "auto",
    memory_budget: Annotated[
        str,
        typer.Option(
            "--memory-budget", help="Memory the index may take (and the IVF/PQ training sample), e.g. 8GB."
        ),
    ] = "8GB",
    target_recall: Annotated[
        float, typer.Option("--target-recall", help="recall@10 vs exact search to tune to.")
    ] = 0.95,
    latency_ms: Annotated[
        float | None, typer.Option("--latency-ms", help="Per-query latency budget (ms).")
    ] = None,
    tune_queries: Annotated[
        list[Path] | None,
        typer.Option(
            "--tune-queries", help="Shard directories of real queries (e.g. encoded captions) to tune on."
        ),
    ] = None,
    nlist: Annotated[
        int | None, typer.Option("--nlist", help="IVF lists (default 4·√N, a power of two).")
    ] = None,
    pq_m: Annotated[
        int | None, typer.Option("--pq-m", help="IVF-PQ code bytes (default: largest that fits).")
    ] = None,
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help=("fp32 | fp16: full vectors of flat/IVF/HNSW as float32 or float16 (half the memory)."),
        ),
    ] = "fp32",
    block_rows: Annotated[int, typer.Option("--block-rows", help="Vectors per streamed block.")] = 16384,
    gpu: Annotated[
        bool | None, typer.Option("--gpu/--cpu", help="Use all visible GPUs / force the CPU.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing index in --out.")
    ] = False,
) -> None:
    """Build an index: choose its type, train on a sample, add streaming, tune nprobe/efSearch, save."""
    from uniretrieve.embed.manifest import ManifestError
    from uniretrieve.index.build import IndexExistsError, build_index
    from uniretrieve.index.factory import IndexChoiceError, parse_bytes
    from uniretrieve.index.gpu import GpuUnavailableError
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.source import ShardSource

    try:
        config = BuildConfig(
            index_type=index_type,
            memory_budget=parse_bytes(memory_budget),
            target_recall=target_recall,
            latency_ms=latency_ms,
            nlist=nlist,
            pq_m=pq_m,
            storage=storage,
            block_rows=block_rows,
            gpu=gpu,
        )
        source = ShardSource(shards)
        tq = ShardSource(tune_queries) if tune_queries else None
        build_index(
            source,
            out,
            config,
            tune_source=tq,
            overwrite=overwrite,
            log=typer.echo,
            source_info={
                "dirs": [str(p.resolve()) for p in shards],
                "tune_queries": [str(p.resolve()) for p in tune_queries or []],
            },
        )
    except (ManifestError, IndexChoiceError, IndexExistsError, GpuUnavailableError, ValueError) as exc:
        _fail(exc)


@app.command("add")
def add(
    shards: Annotated[list[Path], typer.Argument(help="New embedding shard directories to append.")],
    index_dir: Annotated[Path, typer.Option("--index", "-i", help="Existing index directory.")],
    retune: Annotated[
        bool,
        typer.Option(
            "--retune/--no-retune",
            help=("Re-tune nprobe/efSearch over all vectors (needs the index's original shard directories)."),
        ),
    ] = True,
) -> None:
    """Append shards to an index (same model and dim only); re-tunes the search parameter to the recorded target."""
    from uniretrieve.embed.manifest import ManifestError
    from uniretrieve.index.add import add_to_index, check_same_space
    from uniretrieve.index.meta import IndexMetaError, read_meta
    from uniretrieve.index.source import ShardSource

    try:
        meta = read_meta(index_dir)
        source = ShardSource(shards)
        check_same_space(meta, source.spec_settings, source.dim, where=", ".join(map(str, shards)))
        old_dirs = [Path(d) for s in meta.sources for d in s.get("dirs", [])]
        all_vectors = None
        if retune:
            if old_dirs and all((d / "manifest.json").exists() for d in old_dirs):
                all_vectors = ShardSource([*old_dirs, *shards])
            else:
                typer.echo(
                    "note: the index's original shard directories are not all present; the recorded recall "
                    "is marked stale instead of re-tuned",
                    err=True,
                )
        add_to_index(
            index_dir,
            source,
            all_vectors=all_vectors,
            log=typer.echo,
            source_info={"dirs": [str(p.resolve()) for p in shards]},
        )
    except (ManifestError, IndexMetaError, ValueError) as exc:
        _fail(exc)
