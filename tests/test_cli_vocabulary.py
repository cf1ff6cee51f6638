"""One CLI vocabulary: every command of the app is walked and checked against the naming rules, the config-backed
commands against their dataclasses, the deprecated spellings, and the one error path (exit 2, one line)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from uniretrieve.cli.app import app
from uniretrieve.cli.options import DeprecatedAliases, cli_default, to_field_value
from uniretrieve.config import cli_spec
from uniretrieve.demo import DemoConfig
from uniretrieve.embed.config import EncodeConfig
from uniretrieve.eval.config import EvalConfig
from uniretrieve.index.meta import BuildConfig
from uniretrieve.index.milvus import MilvusConfig
from uniretrieve.scenes.config import GenerateConfig
from uniretrieve.serve.config import ServeConfig
from uniretrieve.tiny.config import PretrainConfig, TinyRecipeConfig

runner = CliRunner()

RETIRED = {"--out", "--output-dir", "--work"}
"""Old output spellings: accepted as hidden aliases only."""

CONFIG_COMMANDS: dict[str, tuple[type, set[str]]] = {
    "encode": (EncodeConfig, set()),
    "index build": (BuildConfig, {"shards", "output", "tune_queries", "overwrite"}),
    "index export-milvus": (MilvusConfig, {"shards", "uri", "collection", "import_files", "overwrite"}),
    "eval": (EvalConfig, {"json_out", "cache_dir", "no_cache", "paper_row", "quiet"}),
    "demo": (DemoConfig, set()),
    "serve": (ServeConfig, set()),
    "scenes generate": (GenerateConfig, {"quiet"}),
    "train pretrain": (PretrainConfig, set()),
    "train unime-tiny": (TinyRecipeConfig, {"install"}),
}
"""Command → (its config, the command's own parameters that are not config fields)."""


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))
    else:
        yield " ".join(path), cmd


COMMANDS = dict(_walk(typer.main.get_command(app)))


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option"]


def _names(p: Any) -> set[str]:
    return {n for decl in (*p.opts, *p.secondary_opts) for n in decl.split("/")}


def test_the_walk_finds_every_command() -> None:
    assert {"encode", "eval", "search", "demo", "index build", "index add", "scenes generate"} <= set(
        COMMANDS
    )
    assert {"train stage1", "train stage2", "train stage1-eval", "train pretrain", "train unime-tiny"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_option_names_follow_the_vocabulary(path: str) -> None:
    cmd = COMMANDS[path]
    for p in _options(cmd):
        names = _names(p)
        assert not names & RETIRED, f"{path}: {sorted(names & RETIRED)} is a retired spelling"
        if "--output" in names:
            assert "-o" in names, f"{path}: --output without -o"
        if "-o" in names:
            assert "--output" in names, f"{path}: -o must mean --output"
        if "--model" in names:
            assert "-m" in names, f"{path}: --model without -m"
        if "-m" in names:
            assert "--model" in names, f"{path}: -m must mean --model"
        if "--dtype" in names:  # the storage dtype; compute is --model-dtype
            assert "stored" in (p.help or "").lower(), f"{path}: --dtype must be the storage dtype"
        if "--json" in names:  # print JSON; a file written is --json-out
            assert p.is_flag, f"{path}: --json must be a flag"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_deprecated_aliases_are_hidden_and_point_at_real_options(path: str) -> None:
    cmd = COMMANDS[path]
    assert isinstance(cmd, DeprecatedAliases)
    visible = {n for p in _options(cmd) for n in _names(p)}
    for old, new in cmd.all_aliases().items():
        assert old not in visible and new in visible, f"{path}: {old} → {new}"


@pytest.mark.parametrize("path", sorted(CONFIG_COMMANDS))
def test_config_commands_offer_exactly_their_fields(path: str) -> None:
    cls, extras = CONFIG_COMMANDS[path]
    params = {p.name: p for p in COMMANDS[path].params}
    fields = {f.name: f for f in dataclasses.fields(cls) if cli_spec(f) is not None}
    assert set(params) - {"help"} == set(fields) | extras
    for name, f in fields.items():
        spec, p = cli_spec(f), params[name]
        assert spec is not None
        default = cli_default(f, spec)
        assert p.required == (default is inspect.Parameter.empty), name
        if default is not inspect.Parameter.empty:
            assert to_field_value(spec, p.default) == to_field_value(spec, default), name
            field_default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert to_field_value(spec, default) == field_default, f"{path}: {name}'s CLI default drifted"
        if spec.names:
            assert set(spec.names) <= set(p.opts) | set(p.secondary_opts) | {
                "/".join(p.opts + p.secondary_opts)
            }
        elif not spec.argument:
            assert p.opts == ["--" + name.replace("_", "-")]


def test_every_config_field_declares_its_cli_spelling() -> None:
    for cls, _ in CONFIG_COMMANDS.values():
        for f in dataclasses.fields(cls):
            cli_spec(f)  # raises for a field with neither opt(...) nor no_cli()


def test_a_deprecated_spelling_works_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    res = runner.invoke(
        app,
        ["scenes", "generate", "--out", str(out), "--scenes", "0", "--test-scenes", "2", "--layout", "short"],
    )
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().splitlines()[0] == "note: --out is deprecated; use --output"
    assert (out / "config.json").is_file()
    res = runner.invoke(
        app, ["eval", "coco", "--data", str(tmp_path), "-m", "x", "--dtype", "float32", "--json"]
    )
    assert "note: --dtype is deprecated; use --model-dtype" in res.stderr
    for args in (
        ["pretrain", "--data", "d", "--output-dir", str(tmp_path), "--max-steps", "0"],
        ["unime-tiny", "--out", str(tmp_path), "--pretrain-steps", "many"],
    ):
        res = runner.invoke(app, ["train", *args])  # refused after the note, before any work
        assert res.exit_code == 2 and f"note: {args[-4]} is deprecated; use --output" in res.stderr, (
            res.stderr
        )


BAD_INPUT = {
    "encode": ["encode", "{tmp}", "-o", "{tmp}/o", "--dtype", "int8"],
    "encode without --output": ["encode", "{tmp}"],
    "index build, not a number": ["index", "build", "{tmp}", "-o", "{tmp}/i", "--target-recall", "high"],
    "index build": ["index", "build", "{tmp}", "-o", "{tmp}/i", "--memory-budget", "lots"],
    "index add": ["index", "add", "{tmp}", "--index", "{tmp}/nothing"],
    "search": ["search", "a cat", "--index", "{tmp}/nothing"],
    "eval": ["eval", "flickr8k", "--data", "{tmp}", "-m", "unime-tiny"],
    "eval subsets": ["eval", "coco", "--data", "{tmp}", "-m", "unime-tiny", "--subsets", "a"],
    "demo": ["demo", "-o", "{tmp}/d", "--scenes", "0"],
    "serve": ["serve", "--index", "{tmp}/nothing"],
    "serve on all addresses without a key": ["serve", "--index", "{tmp}", "--host", "0.0.0.0"],
    "serve, not a size": ["serve", "--index", "{tmp}", "--max-upload-bytes", "huge"],
    "serve, not a dtype": ["serve", "--index", "{tmp}", "--model-dtype", "half"],
    "scenes generate": ["scenes", "generate", "-o", "{tmp}/s", "--layout", "nope"],
    "train stage1": ["train", "stage1", "-m", "m", "-o", "{tmp}/r", "--set", "optim.lr=fast"],
    "train stage2": ["train", "stage2", "-o", "{tmp}/r", "--set", "no_such_key=1"],
    "train stage1-eval": ["train", "stage1-eval", "-m", "x", "--data", "{tmp}/missing.csv"],
    "train pretrain": ["train", "pretrain", "--data", "{tmp}", "-o", "{tmp}/p", "--max-steps", "0"],
    "train unime-tiny": ["train", "unime-tiny", "-o", "{tmp}/u", "--pretrain-steps", "many"],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in BAD_INPUT[case]]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
