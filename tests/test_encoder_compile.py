"""`Encoder.compile` (the fast path of `uniretrieve serve --compile`) against the eager forward: the same embeddings
to float rounding for the kinds of batch a server meets (padded texts, one text, images, an instruction); and the
serve command's one-line error when compiling fails."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.index_helpers import random_vectors, write_shard_dir
from tests.serve_helpers import build_flat
from uniretrieve.cli.app import app
from uniretrieve.models.encoder import Encoder
from uniretrieve.types import Item

BATCHES = {
    "padded texts": [
        Item(text="a red circle"),
        Item(text="a blue square below a green star, and more words"),
    ],
    "one text": [Item(text="a red circle above a blue square")],
    "images": [Item(image=make_image(1)), Item(image=make_image(2, (30, 50)))],
    "instruction": [Item(text="a cat", instruction="Find an image that matches the caption.")],
}


def test_compiled_forward_equals_eager(tiny_model_dir: Path) -> None:
    enc = Encoder.load(str(tiny_model_dir), device="cpu")  # its own: compile changes the model in place
    prepared = {name: enc.prepare(items) for name, items in BATCHES.items()}
    eager = {name: enc.forward(b).numpy() for name, b in prepared.items()}
    enc.compile()
    assert enc.compiled
    lm = enc.base_model.get_submodule(enc.spec.language_model_path)
    assert lm._compiled_call_impl is not None  # the decoder is what got compiled
    for name, b in prepared.items():
        got = enc.forward(b).numpy()
        assert got.shape == eager[name].shape
        np.testing.assert_allclose(got, eager[name], atol=2e-5, err_msg=name)
    # and through encode (planning, ordering), a mix of texts and images
    items = [*BATCHES["images"], *BATCHES["padded texts"]]
    want = np.concatenate([eager["images"], eager["padded texts"]])
    np.testing.assert_allclose(enc.encode(items, batch_size=4), want, atol=2e-5)


def test_serve_compile_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """torch.compile failing at warm-up (say, no C++ compiler) stops the server with one line naming the flag."""
    enc = Encoder.load(str(tiny_model_dir), device="cpu")
    shards = write_shard_dir(tmp_path / "shards", random_vectors(10, enc.dim), model_id="other")
    index = build_flat(shards, tmp_path / "idx")

    def broken_compile(self: Encoder) -> None:
        def boom(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        self.base_model.get_submodule(self.spec.language_model_path).forward = boom

    monkeypatch.setattr(Encoder, "compile", broken_compile)
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *_a, **_k: pytest.fail("served after a failed compile"))
    monkeypatch.setattr(sys, "setswitchinterval", lambda _s: None)
    flags = ["--force", "--device", "cpu", "--compile"]
    args = ["serve", "--index", str(index), "-m", str(tiny_model_dir), *flags]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --compile: torch.compile could not build the query model"), line
    assert "No working C++ compiler" in line and "without --compile" in line and "Traceback" not in res.output
