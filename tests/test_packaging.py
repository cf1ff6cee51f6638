"""The wheel installs `uniretrieve`, `uniretrieve.train` (from train/) and `uniretrieve.index` (from index/)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_train_and_index_subpackages(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("uniretrieve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "uniretrieve/train/__init__.py" in names and "uniretrieve/index/__init__.py" in names
    assert not any(n.startswith(("train/", "index/", "tests/")) for n in names)  # no stray top-level packages

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import uniretrieve, uniretrieve.train, uniretrieve.index, uniretrieve.cli.app as a; "
        "print(uniretrieve.__file__); print(uniretrieve.train.__file__); print(uniretrieve.index.__file__)"
    )
    # Run outside the repository with only the installed copy on the path (the editable install's finder is
    # bypassed with -S plus an explicit path, so this really tests the wheel).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *_site_packages()])}
    res = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    for line in res.stdout.split():
        assert line.startswith(str(site)), res.stdout


def _site_packages() -> list[str]:
    """The environment's site-packages (for torch etc.), minus the editable-install hooks of this project."""
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]
