"""`uniretrieve serve` on the command line: the missing extra, the key rule for non-loopback binds (also from the
environment), the model check as `search` does it, and what it hands uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.index_helpers import random_vectors, write_shard_dir
from tests.serve_helpers import build_flat
from uniretrieve.cli import serve as serve_cmd
from uniretrieve.cli.app import app
from uniretrieve.serve.config import API_KEY_ENV, ServeConfig, is_loopback

runner = CliRunner()


def one_error_line(res: Any) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_without_the_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(serve_cmd, "missing_packages", lambda: ["fastapi", "uvicorn"])
    line = one_error_line(runner.invoke(app, ["serve", "--index", str(tmp_path)]))
    assert "pip install 'uniretrieve[serve]'" in line


def test_other_binds_need_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.0.0.5")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("myhost")
    line = one_error_line(runner.invoke(app, ["serve", "--index", str(tmp_path), "--host", "0.0.0.0"]))
    assert "--api-key" in line and API_KEY_ENV in line
    with pytest.raises(ValueError, match="api-key"):
        ServeConfig(host="10.0.0.1", api_key="  ")
    # from the environment: the key rule passes, and the (missing) index is what stops it
    monkeypatch.setenv(API_KEY_ENV, "k")
    line = one_error_line(
        runner.invoke(app, ["serve", "--index", str(tmp_path / "none"), "--host", "0.0.0.0"])
    )
    assert "not an index directory" in line


def test_model_check_and_what_uvicorn_gets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_encoder, tiny_model_dir: Path
) -> None:
    """An index recorded with another model: refused without --force, served with it."""
    shards = write_shard_dir(tmp_path / "shards", random_vectors(20, tiny_encoder.dim), model_id="other")
    index = build_flat(shards, tmp_path / "idx")
    args = ["serve", "--index", str(index), "-m", str(tiny_model_dir), "--device", "cpu"]
    res = runner.invoke(app, args)
    line = res.stderr.strip().splitlines()[-1]  # after transformers' weight-loading bar
    assert res.exit_code == 2 and line.startswith("error: ") and "Traceback" not in res.output
    assert "--force" in line and "different spaces" in line
    calls: list[dict[str, Any]] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setattr(sys, "setswitchinterval", lambda _s: None)  # process-wide: not in the test process
    res = runner.invoke(app, [*args, "--force", "--port", "8123", "--no-micro-batch"])
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["host"] == "127.0.0.1" and call["port"] == 8123 and call["access_log"] is False
    svc = call["app"].state.service
    assert svc.cfg.micro_batch is False and svc.batcher.max_items == 1
    assert svc.holder.current.searcher.encoder is not None
    svc.batcher.close()
    svc.holder.close()


def test_search_threads_cap_faiss_and_every_blas_pool() -> None:
    """--search-threads reaches numpy's OpenBLAS too (its idle workers spin between the exact path's matmuls)."""
    import faiss
    from threadpoolctl import threadpool_info, threadpool_limits

    faiss_before = faiss.omp_get_max_threads()
    assert any(i["user_api"] == "blas" for i in threadpool_info()), "numpy's BLAS pool is visible"
    try:
        with threadpool_limits(limits=None, user_api="blas"):  # restores every BLAS pool's limit on exit
            serve_cmd.set_threads(ServeConfig(search_threads=1))
            assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
            assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(faiss_before)
