"""Fault injection for any writer: run one `uniretrieve` command in a process that dies (os._exit, like a
kill -9: no cleanup, no finally blocks) just before its Nth filesystem step, then compare with an uninterrupted run.

    python -m tests.faults KILL_AT index add b --index idx    # KILL_AT 0: no kill; prints "steps N"
    python -m tests.faults sweep PRISTINE WORK OUT index add b --index WORK

A step is every rename, replace, unlink, mkdir and rmdir the command makes (temp-file commits, the pointer switch,
removal of old versions). `sweep` runs the command on a copy of PRISTINE (none: "-") under OUT/ref, then for every
step n on a copy under OUT/kill<n>: killed before step n, then the same command again; each run is a fork of one
process that imported everything once, and OUT/sweep.json records the exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

STEPS = ("replace", "rename", "unlink", "remove", "mkdir", "rmdir")
KILLED = 77
ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    args: list[str], kill_at: int = 0, *, timeout: float = 120, mode: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`uniretrieve ARGS` in a fresh process, killed before filesystem step `kill_at` (0: never)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tests.faults", mode or str(kill_at), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def step_count(proc: subprocess.CompletedProcess[str]) -> int:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("steps ")]
    assert lines, proc.stdout + proc.stderr
    return int(lines[-1].split()[1])


def _install(kill_at: int, counter: list[int]) -> None:
    for name in STEPS:
        real = getattr(os, name)

        def step(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            counter[0] += 1
            if counter[0] == kill_at:
                os._exit(KILLED)
            return _real(*args, **kwargs)

        setattr(os, name, step)


def sweep_cli(
    pristine: str, work: str, out: Path, args: list[str], *, timeout: float = 600
) -> dict[str, Any]:
    """`sweep` in a subprocess; returns OUT/sweep.json."""
    proc = run_cli([pristine, work, str(out), *args], timeout=timeout, mode="sweep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "sweep.json").read_text())


def _run(args: list[str], kill_at: int) -> int:
    """The command with the kill hook; returns its exit code (the steps count goes to stdout)."""
    from uniretrieve.cli.app import app

    counter = [0]
    _install(kill_at, counter)
    code: Any = 0
    try:
        app(args=args, prog_name="uniretrieve")
    except SystemExit as exc:
        code = exc.code
    print(f"steps {counter[0]}", flush=True)
    return int(code or 0)


def _forked(args: list[str], kill_at: int) -> tuple[int, str]:
    """(exit code, output) of `_run` in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        os._exit(_run(args, kill_at))
    os.close(w)
    with os.fdopen(r) as f:
        output = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


PRELOAD = (
    "pyarrow.parquet",
    "pyarrow.dataset",  # what read_table imports on first use
    "uniretrieve.cli.app",
    "uniretrieve.embed.reader",
    "uniretrieve.embed.pipeline",
    "uniretrieve.models.encoder",
)
"""Modules imported once before forking (the commands' own imports then cost nothing in each run)."""


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in (
        "uniretrieve.cli.index",
        "uniretrieve.index.add",
        "uniretrieve.index.build",
        "uniretrieve.train.stage1",
        "peft",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _single_thread()


def _single_thread() -> None:
    with contextlib.suppress(ImportError):
        import faiss

        faiss.omp_set_num_threads(1)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)


def _sweep(pristine: str, work: str, out: Path, args: list[str]) -> None:
    _preload()

    def fresh(name: str) -> list[str]:
        if pristine != "-":
            shutil.copytree(pristine, out / name, symlinks=True)
        return [str(out / name) if a == work else a for a in args]

    code, output = _forked(fresh("ref"), 0)
    steps = int(output.rsplit("steps ", 1)[1].split()[0])
    runs = []
    for n in range(1, steps + 1):
        cmd = fresh(f"kill{n}")
        killed, out1 = _forked(cmd, n)
        rerun, out2 = _forked(cmd, 0)
        runs.append({"step": n, "killed": killed, "rerun": rerun, "output": out1[-2000:] + out2[-2000:]})
    (out / "sweep.json").write_text(
        json.dumps({"ref": code, "ref_output": output, "steps": steps, "runs": runs})
    )


def main() -> None:
    if sys.argv[1] == "sweep":
        pristine, work, out, *args = sys.argv[2:]
        _sweep(pristine, work, Path(out), args)
        return
    _single_thread()
    sys.exit(_run(sys.argv[2:], int(sys.argv[1])))


if __name__ == "__main__":
    main()
