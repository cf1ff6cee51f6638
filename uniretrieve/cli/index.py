"""`uniretrieve index build|add|verify|export-milvus`: FAISS indexes over embedding shards, and the shards exported
to Milvus (library: uniretrieve.index)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from uniretrieve.cli.options import config_command, register, user_errors

if TYPE_CHECKING:
    from uniretrieve.index.meta import BuildConfig
    from uniretrieve.index.milvus import MilvusConfig

app = typer.Typer(
    help="Build FAISS indexes over embedding shards, add shards to one, or export shards to Milvus.",
    no_args_is_help=True,
)


@config_command("uniretrieve.index.meta:BuildConfig")
def build(
    config: BuildConfig,
    shards: Annotated[
        list[Path], typer.Argument(help="Embedding shard directories (made by `uniretrieve encode`).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index directory to write.")],
    tune_queries: Annotated[
        list[Path] | None,
        typer.Option(
            "--tune-queries", help="Shard directories of real queries (e.g. encoded captions) to tune on."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing index in --output.")
    ] = False,
) -> None:
    """Build an index: choose its type, train on a sample, add streaming, tune nprobe/efSearch, save."""
    from uniretrieve.index.build import build_index
    from uniretrieve.index.source import ShardSource

    with user_errors():
        source = ShardSource(shards)
        tq = ShardSource(tune_queries) if tune_queries else None
        build_index(
            source,
            output,
            config,
            tune_source=tq,
            overwrite=overwrite,
            log=typer.echo,
            source_info={
                "dirs": [str(p.resolve()) for p in shards],
                "tune_queries": [str(p.resolve()) for p in tune_queries or []],
            },
        )


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
    """Append shards to an index (same model and dim only) as its next version; re-tunes the search parameter.

    Shards already added are a no-op; rows already there (same id and content hash) are skipped, rows whose content
    changed replace their old version; ids that another corpus in the index already uses are refused."""
    from uniretrieve.index.add import add_to_index, check_same_space
    from uniretrieve.index.meta import read_meta
    from uniretrieve.index.source import ShardSource

    with user_errors():
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


def verify(
    index_dir: Annotated[Path, typer.Argument(help="Index directory to check.")],
) -> None:
    """Check an index: its version pointer, that index.faiss, idmap.parquet and index.json agree, and that its
    shard directories still hold what was indexed. One line per problem; exit code 2 when there is any."""
    from uniretrieve.index.verify import verify_index

    with user_errors():
        rep = verify_index(index_dir)
    for line in rep.notes:
        typer.echo(f"note: {line}", err=True)
    for line in rep.problems:
        typer.echo(f"problem: {line}", err=True)
    if not rep.ok:
        raise typer.Exit(2)
    typer.echo(f"ok: {index_dir} ({rep.version}: {rep.vectors} vectors, {rep.live} live)")


@config_command("uniretrieve.index.milvus:MilvusConfig")
def export_milvus(
    config: MilvusConfig,
    shards: Annotated[
        list[Path], typer.Argument(help="Embedding shard directories (made by `uniretrieve encode`).")
    ],
    uri: Annotated[
        str,
        typer.Option(
            "--uri",
            help="Milvus to write to: http://host:19530 (a server or cluster; a token from $MILVUS_TOKEN) or a "
            "local file ending in .db (milvus-lite).",
        ),
    ],
    collection: Annotated[str, typer.Option("--collection", help="Collection to create or add to.")],
    import_files: Annotated[
        Path | None,
        typer.Option(
            "--import-files",
            help="Create the collection but write the rows to Parquet files here, for Milvus bulk import.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Drop an existing collection of that name first.")
    ] = False,
) -> None:
    """Copy shards into a Milvus collection: ids, float32 vectors (IP metric), every column, the model's settings.

    Rerunning is safe: rows already there with the same id and content hash are skipped, changed ones replaced.
    A collection of another dim, schema or model is refused unless --overwrite. See docs/milvus.md."""
    from uniretrieve.index.milvus import export_to_milvus

    with user_errors():
        export_to_milvus(
            shards,
            uri,
            collection,
            config,
            overwrite=overwrite,
            import_files=import_files,
            log=typer.echo,
        )


register(app, "build", build, {"--out": "--output"})
register(app, "add", add)
register(app, "verify", verify)
register(app, "export-milvus", export_milvus)
