"""The benchmark table: every entry names a loader and a scorer that exist, imported only when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from uniretrieve.eval.benchmarks import BENCHMARKS, resolve


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_entry_names_callable_steps(name: str) -> None:
    bench = BENCHMARKS[name]
    assert callable(resolve(bench.loader)) and callable(resolve(bench.scorer))


def test_the_table_imports_no_loader() -> None:
    code = "import sys, uniretrieve.eval.benchmarks; print('uniretrieve.eval.steps' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
