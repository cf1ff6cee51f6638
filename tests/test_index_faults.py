"""Index writers under kills and concurrency: a kill before any filesystem step of `index build` or `index add`,
followed by the same command, gives what an uninterrupted run gives; two adds at once both land; a search running
during adds answers from the old or the new version, never with an error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.faults import KILLED, ROOT, run_cli, sweep_cli
from tests.index_faults import snapshot
from tests.index_helpers import clustered_vectors, to_flat_layout, write_shard_dir
from uniretrieve.index.store import version_dir
from uniretrieve.index.verify import verify_index

D = 16
BUILD = ["--type", "flat", "--memory-budget", "1GB"]


def corpus(root: Path, x: np.ndarray, prefix: str = "", hashes: list[str] | None = None) -> Path:
    hashes = hashes or [f"h{prefix}{i}" for i in range(len(x))]
    return write_shard_dir(root, x, shard_rows=50, id_prefix=prefix, columns={"content_hash": hashes})


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr


def clean(out: Path) -> bool:
    """Nothing left over: the pointer, the lock file and exactly the one current version."""
    names = sorted(p.name for p in out.iterdir())
    return names == [".uniretrieve.lock", "CURRENT", version_dir(out).name]


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    x = clustered_vectors(260, D, seed=5)
    hashes = [f"h{i}" for i in range(120)]
    changed = x[:120].copy()
    changed[3] = clustered_vectors(1, D, seed=50)[0]
    return {
        "a": corpus(tmp_path / "a", x[:100]),
        "b": corpus(tmp_path / "b", x[100:160], prefix="b"),
        "c": corpus(tmp_path / "c", x[160:200], prefix="c"),
        "d": corpus(tmp_path / "d", x[200:260], prefix="d"),
        # "a" re-encoded: row 3 changed, rows 100..119 new
        "a2": corpus(
            tmp_path / "a2",
            np.concatenate([changed[:100], x[200:220]]),
            hashes=[*hashes[:3], "x3", *hashes[4:]],
        ),
    }


def kill_everywhere(args: list[str], pristine: Path | None, work: Path, tmp_path: Path) -> int:
    """Run `args` on a copy of `pristine` killed before each of its filesystem steps, rerun it, compare with an
    uninterrupted run. Returns the number of kill points tried."""
    out = tmp_path / "sweep"
    out.mkdir()
    res = sweep_cli(str(pristine) if pristine else "-", str(work), out, args)
    assert res["ref"] == 0, res["ref_output"]
    expected, steps = snapshot(out / "ref"), res["steps"]
    assert steps >= 4 and len(res["runs"]) == steps
    for run in res["runs"]:
        n, kill = run["step"], out / f"kill{run['step']}"
        assert run["killed"] == KILLED and run["rerun"] == 0, run
        assert snapshot(kill) == expected, f"kill before step {n} of {steps}"
        assert verify_index(kill).ok and clean(kill), (n, sorted(p.name for p in kill.iterdir()))
    return steps


def test_kill_at_every_step_of_build(tmp_path: Path, dirs: dict[str, Path]) -> None:
    work = tmp_path / "idx"
    steps = kill_everywhere(
        ["index", "build", str(dirs["a"]), "--output", str(work), *BUILD], None, work, tmp_path
    )
    assert steps >= 5


@pytest.mark.parametrize("case", ["append", "update", "flat_layout"])
def test_kill_at_every_step_of_add(tmp_path: Path, dirs: dict[str, Path], case: str) -> None:
    base = tmp_path / "base"
    ok(run_cli(["index", "build", str(dirs["a"]), "--output", str(base), *BUILD]))
    if case == "flat_layout":
        to_flat_layout(base)
    else:  # an index with two versions' history, so the old version's removal is among the steps
        ok(run_cli(["index", "add", str(dirs["c"]), "--index", str(base)]))
    new = dirs["b"]
    if case == "update":  # the corpus re-encoded in its own directory
        shutil.rmtree(dirs["a"])
        shutil.copytree(dirs["a2"], dirs["a"])
        new = dirs["a"]
    work = tmp_path / "idx"
    kill_everywhere(["index", "add", str(new), "--index", str(work)], base, work, tmp_path)


def test_two_adds_at_once_both_land(tmp_path: Path, dirs: dict[str, Path]) -> None:
    out = tmp_path / "idx"
    ok(run_cli(["index", "build", str(dirs["a"]), "--output", str(out), *BUILD]))
    cmds = [["index", "add", str(dirs[k]), "--index", str(out)] for k in ("b", "c", "d")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults", "0", *c],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in cmds
    ]
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output
    snap = snapshot(out)
    ids = snap["ids"]
    assert len(ids) == len(set(ids)) == 260 and snap["num_vectors"] == 260
    assert {i[0] for i in ids if not i[0].isdigit()} == {"b", "c", "d"}
    assert verify_index(out).ok and clean(out)
    x = clustered_vectors(260, D, seed=5)
    by_id = dict(zip(ids, np.frombuffer(snap["vectors"], np.float32).reshape(-1, D), strict=True))
    np.testing.assert_array_equal(by_id["c5"], x[165])  # every id kept its own vector


READER = """
import sys, time, faiss
from uniretrieve.search.searcher import Searcher
faiss.omp_set_num_threads(1)
out, stop, q = sys.argv[1], sys.argv[2], [[float(v) for v in sys.argv[3].split(",")]]
import numpy as np, os
counts = []
while not os.path.exists(stop) or len(counts) < 3:
    try:
        with Searcher.load(out) as s:
            hits = s.search(vectors=np.asarray(q, np.float32), k=5)[0]
            assert len(hits) == 5 and hits[0].id == "0", hits
            counts.append(s.cpu_index.ntotal)
        time.sleep(0.02)  # leave the CPU to the writers
    except Exception as exc:
        print("error", type(exc).__name__, exc, flush=True)
        sys.exit(1)
print("counts", sorted(set(counts)), len(counts), flush=True)
"""


def test_search_during_adds_answers_old_or_new(tmp_path: Path, dirs: dict[str, Path]) -> None:
    out = tmp_path / "idx"
    ok(run_cli(["index", "build", str(dirs["a"]), "--output", str(out), *BUILD]))
    q = ",".join(map(str, clustered_vectors(260, D, seed=5)[0]))
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(out), str(stop), q],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for k in ("b", "c", "d"):
            ok(run_cli(["index", "add", str(dirs[k]), "--index", str(out)]))
            time.sleep(0.2)
    finally:
        stop.touch()
        output, _ = reader.communicate(timeout=300)
    assert reader.returncode == 0, output
    seen = json.loads(output.split("counts ", 1)[1].split("]")[0] + "]")
    assert set(seen) <= {100, 160, 200, 260}
    # a version the reader held when an add finished is removed by the next writer (here a no-op re-add)
    ok(run_cli(["index", "add", str(dirs["d"]), "--index", str(out)]))
    assert verify_index(out).ok and clean(out)
