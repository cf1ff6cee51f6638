"""`uniretrieve serve`: the search service and web page over an index (the optional `serve` extra)."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

import typer

from uniretrieve.cli.options import config_command, fail, user_errors

if TYPE_CHECKING:
    from uniretrieve.serve.config import ServeConfig

SERVE_PACKAGES = ("fastapi", "uvicorn", "multipart", "threadpoolctl")
"""What the `serve` extra installs (python-multipart imports as `multipart`)."""


def missing_packages() -> list[str]:
    return [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]


def set_threads(cfg: ServeConfig) -> None:
    """The server process's thread pools: torch's (--model-threads); FAISS's OpenMP and every BLAS pool
    (--search-threads)."""
    if cfg.model_threads is not None:
        import torch

        torch.set_num_threads(cfg.model_threads)
    if cfg.search_threads is not None:
        import faiss
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(cfg.search_threads)
        # numpy's OpenBLAS (the exact path's matmul) keeps its own pool, whose idle workers spin between calls: at
        # 2 threads on 2 cores one of them burnt a whole core under a steady query stream (benchmarks/RESULTS.md)
        threadpool_limits(limits=cfg.search_threads, user_api="blas")


@config_command("uniretrieve.serve.config:ServeConfig")
def serve(cfg: ServeConfig) -> None:
    """Serve an index over HTTP: search API (docs at /docs), web page at /, live swap after `index add`."""
    missing = missing_packages()
    if missing:
        fail(f"uniretrieve serve needs {', '.join(missing)}: pip install 'uniretrieve[serve]'")
    import uvicorn

    from uniretrieve.serve.app import create_app, warm_up
    from uniretrieve.serve.state import open_searcher

    # the encoder thread runs Python between torch ops; hand the GIL to the event loop every 0.5 ms, not every
    # 5 ms (measured with benchmarks/serve_load.py: ~20% more queries/s at 16 clients, a shorter tail)
    sys.setswitchinterval(0.0005)
    set_threads(cfg)
    with user_errors():
        searcher = open_searcher(cfg)
        if cfg.compile:
            typer.echo("compiling the query model (torch.compile, about a minute)...", err=True)
            searcher.encoder.compile()
        try:
            warm_up(searcher)  # runs the model (and compiles it) before accepting requests
        except Exception as exc:
            if not cfg.compile:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            fail(
                f"--compile: torch.compile could not build the query model ({first[:200]}); serve without --compile"
            )
        app = create_app(cfg, searcher=searcher)
    meta = searcher.meta
    typer.echo(
        f"serving {cfg.index} ({meta.type}, {meta.num_vectors} vectors, model {meta.model_id}) on "
        f"http://{cfg.host}:{cfg.port}/  (API docs: /docs; key {'required' if cfg.api_key else 'not set'})",
        err=True,
    )
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        access_log=cfg.access_log,
        log_level="info" if cfg.access_log else "warning",
        server_header=False,
    )
