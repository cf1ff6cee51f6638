"""First run: a plain install (no extras) has FAISS for the CPU, and two FAISS builds together are warned about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uniretrieve.index import faiss_builds

ROOT = Path(__file__).resolve().parents[1]


def test_faiss_cpu_is_a_default_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]]
    assert "faiss-cpu" in names
    assert not any(d.startswith("faiss-cpu") for d in project["optional-dependencies"]["dev"])
    assert project["optional-dependencies"]["gpu"] == ["faiss-gpu>=1.15"]


def test_both_builds_give_one_warning_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    assert faiss_builds.both_builds_message({"faiss-cpu": "1.15.1"}) is None
    assert faiss_builds.both_builds_message({"faiss-gpu": "1.15.0"}) is None
    monkeypatch.setattr(
        faiss_builds, "installed_builds", lambda: {"faiss-cpu": "1.15.1", "faiss-gpu": "1.15.0"}
    )
    faiss_builds.warn_if_both_builds.cache_clear()
    try:
        faiss_builds.warn_if_both_builds()
        faiss_builds.warn_if_both_builds()  # once per process
    finally:
        faiss_builds.warn_if_both_builds.cache_clear()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: faiss-cpu 1.15.1 and faiss-gpu 1.15.0")
    assert 'pip uninstall -y faiss-cpu && pip install "faiss-gpu>=1.15"' in err[0]


def test_one_build_is_silent() -> None:
    res = subprocess.run(
        [sys.executable, "-c", "import uniretrieve.index.build"], capture_output=True, text=True, check=True
    )
    if len(faiss_builds.installed_builds()) == 1:
        assert "warning" not in res.stderr
