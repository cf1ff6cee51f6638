"""The root `uniretrieve` Typer app. Each sub-command lives in its own module and is registered here.

Sub-command modules import heavy libraries (torch, faiss, the trainer) inside their command bodies, so
`uniretrieve --help` and `uniretrieve --version` stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from uniretrieve._version import __version__
from uniretrieve.cli import demo as demo_cmd
from uniretrieve.cli import encode as encode_cmd
from uniretrieve.cli import eval as eval_cmd
from uniretrieve.cli import index as index_cmd
from uniretrieve.cli import models as models_cmd
from uniretrieve.cli import scenes as scenes_cmd
from uniretrieve.cli import search as search_cmd
from uniretrieve.cli import serve as serve_cmd
from uniretrieve.cli import train as train_cmd
from uniretrieve.cli.options import register

app = typer.Typer(
    name="uniretrieve",
    help="Universal multimodal embeddings (UniME): encode, index, search, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"uniretrieve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Universal multimodal embeddings (UniME): encode, index, search, train, evaluate."""


# --- sub-commands (one line each) -------------------------------------------------------------------------
register(app, "demo", demo_cmd.demo)
register(app, "models", models_cmd.models)
app.add_typer(scenes_cmd.app, name="scenes")
app.add_typer(index_cmd.app, name="index")
register(app, "search", search_cmd.search)
register(app, "serve", serve_cmd.serve)
register(app, "encode", encode_cmd.encode)
register(app, "eval", eval_cmd.eval_command, {"--out": "--json-out"})
app.add_typer(train_cmd.app, name="train")


def main() -> None:
    app()
