"""The root CLI: --version, `models`, and no stub commands."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from uniretrieve._version import __version__
from uniretrieve.cli.app import app
from uniretrieve.models.backbones import supported_families
from uniretrieve.models.names import REGISTERED_MODELS

runner = CliRunner()


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"uniretrieve {__version__}"


def test_models_lists_every_family_and_registered_name() -> None:
    res = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    for family in supported_families():
        assert family in res.output
    for name in REGISTERED_MODELS:
        assert name in res.output


def test_unknown_command_fails() -> None:
    res = runner.invoke(app, ["frobnicate"])
    assert res.exit_code != 0


def test_root_import_stays_light() -> None:
    """`uniretrieve --help` must not pull torch, faiss or the trainer in at import time."""
    code = (
        "import sys, uniretrieve.cli.app; "
        "bad = [m for m in ('torch', 'faiss', 'transformers', 'uniretrieve.train', 'uniretrieve.index') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
