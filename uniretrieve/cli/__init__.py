"""Command line: thin Typer sub-apps over library functions."""
