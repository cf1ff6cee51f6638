"""Load benchmark of `uniretrieve serve`: queries/s and latency under N concurrent clients on the loopback address.

    flock /tmp/bench.lock python -m benchmarks.serve_load                     # the demo index (built if missing)
    python -m benchmarks.serve_load --index idx/ --clients 16 --seconds 10 --json-out serve.json

Phases, each bounded in queries and in time: one query at a time end to end; N clients with micro-batching; N
clients with `--no-micro-batch` (a fresh server: one query per forward pass); N clients while `uniretrieve index
add` swaps new versions in (the index is copied first: the original is never changed); and the per-query cost of the
CLI (`uniretrieve search` wall time: start-up, model and index load, one query). Clients are threads with one
keep-alive `http.client` connection each, sending distinct text queries; they share the machine's cores with the
server, which is said beside the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import cpu_model

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "ring", "cross", "diamond"]
PLACES = ["left of", "above", "below", "right of", "next to"]


def queries(n: int, seed: int = 0) -> list[str]:
    """`n` distinct-ish captions in the demo corpus's vocabulary."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c1, c2 = rng.choice(COLOURS, 2)
        s1, s2 = rng.choice(SHAPES, 2)
        out.append(f"a {c1} {s1} {rng.choice(PLACES)} a {c2} {s2}")
    return out


@dataclass
class LoadResult:
    phase: str
    clients: int
    queries: int
    errors: int
    seconds: float
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    versions: list[str] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --- the server --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli() -> list[str]:
    return [sys.executable, "-c", "from uniretrieve.cli.app import main; main()"]


class Server:
    """`uniretrieve serve` in a child process on a free loopback port."""

    def __init__(self, index: Path, *extra: str, startup_s: float = 180) -> None:
        self.port = free_port()
        cmd = [
            *cli(),
            "serve",
            "--index",
            str(index),
            "--port",
            str(self.port),
            "--watch-interval",
            "0.2",
            *extra,
        ]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.output()}")
            try:
                status, body = request(self.connect(), "GET", "/health")
                if status == 200:
                    self.version = json.loads(body)["version"]
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not answer /health within {startup_s} s: {self.output()}")
            time.sleep(0.1)

    def wait_for_version(self, version: str, timeout_s: float = 60.0) -> None:
        """Until /health reports `version` (the watcher polls every 0.2 s; a loaded machine may take longer)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = request(self.connect(), "GET", "/health")
            if status == 200 and json.loads(body)["version"] == version:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server did not swap in {version} within {timeout_s} s: {self.output()}")

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (all its threads), from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    res = conn.getresponse()
    return res.status, res.read()


# --- the clients -------------------------------------------------------------------------------------------------


def drive(
    server: Server, phase: str, clients: int, max_queries: int, seconds: float, k: int = 10, seed: int = 0
) -> LoadResult:
    """`clients` threads send /search text queries back to back until `max_queries` are answered or `seconds`
    pass."""
    texts = queries(max(max_queries, 1), seed)
    bodies = [json.dumps({"text": t, "k": k}).encode() for t in texts]
    latencies: list[float] = []
    errors: list[str] = []
    versions: set[str] = set()
    counter = iter(range(max_queries))
    lock = threading.Lock()
    cpu0, client0 = server.cpu_seconds(), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds

    def client() -> None:
        conn = server.connect()
        mine: list[float] = []
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t0 = time.perf_counter()
                try:
                    status, raw = request(conn, "POST", "/search", bodies[i])
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = server.connect()
                    continue
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    with lock:
                        errors.append(f"{status}: {raw[:200]!r}")
                    continue
                v = json.loads(raw)["version"]
                if v not in versions:
                    with lock:
                        versions.add(v)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    server_cpu, client_cpu = server.cpu_seconds() - cpu0, time.process_time() - client0
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    done = len(latencies) - len(errors)
    per_query = {
        "server_cpu_ms_per_query": round(server_cpu * 1000 / max(done, 1), 3),
        "client_cpu_ms_per_query": round(client_cpu * 1000 / max(done, 1), 3),
    }
    return LoadResult(
        phase=phase,
        clients=clients,
        queries=done,
        errors=len(errors),
        seconds=round(elapsed, 3),
        qps=round(done / elapsed, 1),
        p50_ms=round(float(np.percentile(lat, 50)), 2),
        p95_ms=round(float(np.percentile(lat, 95)), 2),
        p99_ms=round(float(np.percentile(lat, 99)), 2),
        max_ms=round(float(lat.max()), 2),
        versions=sorted(versions),
        error_samples=errors[:5],
        extra=per_query,
    )


# --- index preparation -------------------------------------------------------------------------------------------


def demo_index(work: Path, scenes: int, model: str) -> Path:
    """The demo's index (built through the demo's own steps when missing)."""
    from rich.console import Console

    from uniretrieve.demo import DemoConfig, build, encode_images, generate_corpus

    cfg = DemoConfig(work=str(work), model=model, scenes=scenes)
    console = Console(stderr=True)
    return build(cfg, encode_images(cfg, generate_corpus(cfg, console), console), console)


def extra_shards(work: Path, model: str, adds: int, images: int) -> list[Path]:
    """`adds` small shard directories of new generated scenes (other seeds), for `index add` during the load. Each
    image folder sits one level down (`add-N/test-…jpg`), so its ids differ from the index's."""
    from rich.console import Console

    from uniretrieve.demo import DemoConfig, generate_corpus
    from uniretrieve.embed.config import EncodeConfig
    from uniretrieve.embed.pipeline import encode_corpus

    out = []
    console = Console(stderr=True)
    for n in range(adds):
        cfg = DemoConfig(work=str(work / f"add-{n}"), model=model, scenes=images, seed=777_000 + n)
        folder = work / f"add-{n}" / "images"
        if not (folder / f"add-{n}").is_dir():
            corpus = generate_corpus(cfg, console)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copytree(corpus / "urban1k" / "image", folder / f"add-{n}")
        shards = work / f"add-{n}" / "embeddings"
        encode_corpus(EncodeConfig(input=str(folder), output=str(shards), model=model, progress=False))
        out.append(shards)
    return out


def cli_search_seconds(index: Path, runs: int) -> list[float]:
    times = []
    for text in queries(runs, seed=99):
        t0 = time.perf_counter()
        subprocess.run(
            [*cli(), "search", text, "--index", str(index), "-k", "10", "--json"],
            check=True,
            capture_output=True,
        )
        times.append(round(time.perf_counter() - t0, 3))
    return times


# --- the whole run -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    index = Path(args.index) if args.index else demo_index(work / "demo", args.scenes, args.model)
    served = work / "served-index"  # a copy: `index add` below must not change the original
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(index, served, ignore=shutil.ignore_patterns(".readers", ".uniretrieve.lock"))
    for v in served.glob("v-*"):
        (v / ".readers").touch()
    adds = extra_shards(work, args.model, args.swaps, args.swap_images) if args.swaps else []
    phases: list[LoadResult] = []
    common = ("--batch-wait-ms", str(args.batch_wait_ms), "--max-batch-size", str(args.max_batch_size))
    common += ("--model-threads", str(args.model_threads), "--search-threads", "1")
    if args.model_dtype:
        common += ("--model-dtype", args.model_dtype)
    if args.compile:
        common += ("--compile",)
    if args.model_workers != 1:
        common += ("--model-workers", str(args.model_workers))
    with Server(served, *common) as server:
        drive(server, "warm-up", min(args.clients, 4), 50, 5)
        phases.append(drive(server, "single client", 1, args.single_queries, args.seconds))
        phases.append(drive(server, "micro-batching", args.clients, args.max_queries, args.seconds))
        if adds:
            swapped: list[float] = []

            def adder() -> None:
                for shards in adds:
                    t0 = time.perf_counter()
                    subprocess.run(
                        [*cli(), "index", "add", str(shards), "--index", str(served), "--no-retune"],
                        check=True,
                        capture_output=True,
                        preexec_fn=(lambda: os.nice(args.add_nice)) if args.add_nice else None,
                    )
                    swapped.append(round(time.perf_counter() - t0, 2))

            th = threading.Thread(target=adder)
            th.start()
            res = drive(
                server,
                "micro-batching during index add",
                args.clients,
                args.max_queries * 4,
                args.seconds * 3,
            )
            th.join()
            from uniretrieve.index.store import current_version

            server.wait_for_version(current_version(served).path.name)  # the last add is on disk; then served
            final = drive(server, "after the adds", 1, 5, 5)
            res.extra.update(index_add_seconds=swapped, version_after=final.versions)
            phases.append(res)
    with Server(served, "--no-micro-batch", *common[4:]) as server:
        drive(server, "warm-up", min(args.clients, 4), 50, 5)
        phases.append(drive(server, "no micro-batching", args.clients, args.max_queries, args.seconds))
    cli_times = cli_search_seconds(served, args.cli_runs) if args.cli_runs else []
    return {
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "add_nice": args.add_nice,
        "index": str(index),
        "phases": [asdict(p) for p in phases],
        "cli_search_seconds": cli_times,
        "cli_search_median_s": float(np.median(cli_times)) if cli_times else None,
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", help="Index to serve (default: the demo's, built in --work when missing).")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "uniretrieve-serve-bench"))
    p.add_argument("--model", default="unime-tiny", help="Model for the demo index and the added shards.")
    p.add_argument("--scenes", type=int, default=2000, help="Scenes of the demo index.")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0, help="Time bound of each phase.")
    p.add_argument("--max-queries", type=int, default=6000, help="Query bound of each phase.")
    p.add_argument("--single-queries", type=int, default=200)
    p.add_argument("--swaps", type=int, default=3, help="`index add` runs during the swap phase (0: none).")
    p.add_argument("--swap-images", type=int, default=20, help="New images per add.")
    p.add_argument(
        "--add-nice",
        type=int,
        default=0,
        help="Run each `index add` at this niceness (as `nice -n N`: a maintenance job yielding to the server).",
    )
    p.add_argument("--cli-runs", type=int, default=3, help="`uniretrieve search` runs timed (0: none).")
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--model-threads", type=int, default=1, help="The server's --model-threads.")
    p.add_argument("--model-dtype", default=None, help="The server's --model-dtype (e.g. bfloat16).")
    p.add_argument("--compile", action="store_true", help="The server's --compile (torch.compile).")
    p.add_argument("--model-workers", type=int, default=1, help="The server's --model-workers.")
    p.add_argument("--json-out", help="Write the results here.")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    result = run(args)
    for p in result["phases"]:
        print(
            f"{p['phase']:<34} {p['clients']:>3} clients  {p['qps']:>8.1f} q/s  p50 {p['p50_ms']:>7.2f}  "
            f"p95 {p['p95_ms']:>7.2f}  p99 {p['p99_ms']:>7.2f} ms  errors {p['errors']}  "
            f"CPU ms/query server {p['extra']['server_cpu_ms_per_query']:.2f} clients "
            f"{p['extra']['client_cpu_ms_per_query']:.2f}  {','.join(p['versions'])}"
        )
    print(f"load average at start {result['load_average_at_start']}, at end {result['load_average_at_end']}")
    if result["cli_search_seconds"]:
        print(f"uniretrieve search (CLI, one query): {result['cli_search_median_s']:.2f} s wall (median)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
