"""`uniretrieve models`: the supported backbone families and registered model names."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def models() -> None:
    """List the supported backbone families and the registered model names."""
    from uniretrieve.models.backbones import REGISTRY
    from uniretrieve.models.names import REGISTERED_MODELS, shipped_dir

    console = Console()
    table = Table(title="Backbone families")
    for col in (
        "family",
        "model_type",
        "transformers class",
        "image token",
        "padding",
        "example checkpoints",
    ):
        table.add_column(col)
    for spec in REGISTRY.values():
        table.add_row(
            spec.family,
            ", ".join(spec.model_types),
            spec.model_class + (" (remote code)" if spec.trust_remote_code else ""),
            spec.image_token,
            spec.padding_side,
            "\n".join(spec.examples),
        )
    console.print(table)
    names = Table(title="Registered model names")
    names.add_column("name")
    names.add_column("resolves to")
    names.add_column("family")
    names.add_column("status")
    for name, entry in REGISTERED_MODELS.items():
        status = "hub or a local copy"
        if entry.shipped:
            installed = (shipped_dir(name) / "config.json").exists()
            status = (
                "built in" if installed else f"not installed: uniretrieve train {name} --output DIR --install"
            )
        names.add_row(name, entry.source, entry.family, status)
    console.print(names)
