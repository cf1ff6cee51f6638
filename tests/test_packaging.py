"""The wheel holds every tracked file of the three source roots (uniretrieve/, train/ → uniretrieve.train, index/ →
uniretrieve.index), and a fresh venv with only the wheel installed runs the `uniretrieve` command."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = {
    "uniretrieve": "uniretrieve",
    "train": "uniretrieve/train",
    "index": "uniretrieve/index",
    "tiny": "uniretrieve/tiny",
}


def _tracked_package_files() -> set[str]:
    """Every git-tracked file under the source roots, as the path it must have in the wheel."""
    out = subprocess.run(
        ["git", "ls-files", *ROOTS], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {ROOTS[f.split("/", 1)[0]] + "/" + f.split("/", 1)[1] for f in out}


@pytest.mark.slow
def test_wheel_ships_every_package_file_and_runs_from_a_fresh_venv(tmp_path: Path) -> None:
    # Build from a copy of the tracked files: an in-tree build/ folder left by an earlier build would otherwise
    # lend the wheel files that discovery missed.
    src = tmp_path / "src"
    if (ROOT / ".git").exists():
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        for f in files.stdout.split():
            if (ROOT / f).is_file():
                (src / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, src / f)
    else:
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", ".venv", "__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
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
    names = set(zipfile.ZipFile(wheel).namelist())
    if (ROOT / ".git").exists():
        missing = _tracked_package_files() - names
        assert not missing, f"left out of the wheel: {sorted(missing)[:10]}"
    assert "uniretrieve/train/__init__.py" in names and "uniretrieve/index/__init__.py" in names
    assert not any(
        n.startswith(("train/", "index/", "tiny/", "tests/")) for n in names
    )  # no stray top-level packages

    # A fresh venv that sees this environment's third-party packages (torch etc.) through a plain path entry —
    # not as a site dir, so this project's editable-install hook is not loaded — and the wheel itself.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    (purelib,) = (env_dir / "lib").glob("python*/site-packages")
    (purelib / "zz_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = env_dir / "bin" / "uniretrieve"
    res = subprocess.run([str(cli), "models"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "unime-tiny" in res.stdout and "llava_next" in res.stdout
    code = (
        "import uniretrieve, uniretrieve.train.loop, uniretrieve.index.build; "
        "print(uniretrieve.__file__); print(uniretrieve.train.loop.__file__); print(uniretrieve.index.build.__file__)"
    )
    res = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    for line in res.stdout.split():
        assert line.startswith(str(purelib)), res.stdout
