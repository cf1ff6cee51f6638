"""The ablation runner (tiny/ablation.py): rows trained and scored one at a time, resumable across sessions, with
each row's training seconds; the recipe's steps run only where the recipe folder lacks them. Training, the recipe
and scoring are replaced by fakes that record their calls."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from uniretrieve.tiny import ablation
from uniretrieve.tiny.config import TinyRecipeConfig
from uniretrieve.tiny.model_card import markdown_table


class Stop(RuntimeError):
    pass


def _recipe(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "recipe.json").write_text(
        json.dumps({**asdict(TinyRecipeConfig(out=str(root))), "seconds": 1})
    )
    steps = {
        "data": 20.0,
        "align": 400.0,
        "pretrain": 100.0,
        "pretrain_long": 100.0,
        "stage1": 200.0,
        "stage2": 2000.0,
    }
    (root / "step_seconds.json").write_text(json.dumps(steps))
    return root


def _fakes(mp: pytest.MonkeyPatch, calls: list[str], stop_at: str | None = None) -> None:
    import uniretrieve.tiny.clip_baseline as clip_baseline
    import uniretrieve.tiny.dual_encoder as dual_encoder
    import uniretrieve.tiny.recipe as recipe
    import uniretrieve.train.stage2 as stage2

    def run_stage2(cfg: Any, console: Any = None) -> Any:
        calls.append("train " + Path(cfg.output_dir).name)
        if Path(cfg.output_dir).name == stop_at:
            raise Stop("session over")
        merged = Path(cfg.output_dir) / "merged"
        merged.mkdir(parents=True)
        (merged / "config.json").write_text("{}")
        return SimpleNamespace(merged_dir=str(merged))

    def train_dual_encoder(cfg: Any, console: Any = None) -> Any:
        calls.append("train clip")
        final = Path(cfg.output_dir) / "final"
        final.mkdir(parents=True)
        (final / "clip_baseline.json").write_text("{}")
        return final, None

    step_dirs = {"pretrain": "base/final", "pretrain_long": "base-long/final", "stage1": "stage1/merged"}
    step_dirs["stage2"] = "stage2/merged"

    def run_recipe(cfg: Any, console: Any = None, until: str = "eval") -> Path:
        result = Path(cfg.out) / step_dirs[until]
        if not result.exists():  # the real recipe skips finished steps too
            calls.append("recipe " + until)
            result.mkdir(parents=True)
        return result

    def evaluate_model(model: Any, data: Path, encoder: Any = None) -> dict[str, Any]:
        name = "clip" if encoder is not None else Path(model).parent.name  # e.g. stage1/merged → stage1
        calls.append("score " + name)
        return {"urban1k": {"t2i": {"R@1": float(len(calls))}, "i2t": {"R@1": 1.0}}}

    mp.setattr(stage2, "run_stage2", run_stage2)
    mp.setattr(dual_encoder, "train_dual_encoder", train_dual_encoder)
    mp.setattr(clip_baseline.ClipStyleEncoder, "from_pretrained", classmethod(lambda cls, p: ("clip", p)))
    mp.setattr(recipe, "evaluate_model", evaluate_model)
    mp.setattr(recipe, "run_recipe", run_recipe)


def test_rows_are_scored_as_they_are_trained_and_a_stopped_run_resumes(tmp_path: Path) -> None:
    recipe, out = _recipe(tmp_path / "recipe"), tmp_path / "ablation"
    console = Console(quiet=True)
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        _fakes(mp, calls, stop_at="stage2-inbatch")
        with pytest.raises(Stop):
            ablation.run_ablation(recipe, out, console)
    # the rows before the stop are scored and kept; the stopped row's time so far is kept too
    kept = json.loads((out / "scores.json").read_text())
    assert list(kept) == ["CLIP-style dual encoder", "base MLLM, prompted", "stage 1 only", "stage 2 only"]
    assert calls == [
        "recipe pretrain",
        "train clip",
        "score clip",
        "recipe pretrain_long",
        "score base-long",
        "recipe stage1",
        "score stage1",
        "train stage2-only",
        "score stage2-only",
        "train stage2-inbatch",
    ]
    assert ablation.RowSeconds(out / "stage2-inbatch").read() is not None

    calls.clear()
    with pytest.MonkeyPatch.context() as mp:
        _fakes(mp, calls)
        scores = ablation.run_ablation(recipe, out, console)
    assert calls == [
        "train stage2-inbatch",
        "score stage2-inbatch",
        "recipe stage2",
        "score stage2",
    ]  # nothing trained or scored twice; the recipe's own stage 2 runs last
    assert list(scores) == [
        *list(kept),
        "stage 1 + stage 2, in-batch negatives",
        "stage 1 + stage 2 (unime-tiny)",
    ]

    own = {n: ablation.RowSeconds(out / d).read() for n, d in ablation.OWN_RUN.items()}
    seconds = {n: ablation.row_seconds(n, recipe, out) for n in scores}
    assert seconds["CLIP-style dual encoder"] == own["CLIP-style dual encoder"]
    assert seconds["base MLLM, prompted"] == 600.0 and seconds["stage 1 only"] == 800.0
    assert seconds["stage 2 only"] == pytest.approx(600.0 + own["stage 2 only"])
    assert seconds["stage 1 + stage 2, in-batch negatives"] == pytest.approx(
        800.0 + own["stage 1 + stage 2, in-batch negatives"]
    )
    assert seconds["stage 1 + stage 2 (unime-tiny)"] == 2800.0
    table = markdown_table(scores, seconds=seconds).splitlines()
    assert table[0].endswith("| training s |") and table[-1].endswith("| 2,800 |")


def test_a_row_without_a_known_time_shows_a_dash(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "recipe")
    (recipe / "step_seconds.json").unlink()
    assert ablation.row_seconds("stage 1 only", recipe, tmp_path / "ablation") is None
    assert ablation.row_seconds("stage 2 only", recipe, tmp_path / "ablation") is None
    row = markdown_table({"m": {}}, seconds={"m": None}).splitlines()[-1]
    assert row.endswith("| – |")


def test_a_new_recipe_folder_gets_the_recipes_defaults_and_a_saved_config_wins(tmp_path: Path) -> None:
    new = ablation.recipe_config(tmp_path / "new")
    assert new == TinyRecipeConfig(out=str(tmp_path / "new"))
    # a folder the recipe started in (recipe.json saved before its first step), made elsewhere: its settings, this
    # folder
    started = tmp_path / "started"
    started.mkdir()
    saved = TinyRecipeConfig(out="/elsewhere", train_scenes=64, stage2_overrides=["max_steps=3"])
    (started / "recipe.json").write_text(json.dumps(asdict(saved)))
    cfg = ablation.recipe_config(started)
    assert cfg.train_scenes == 64 and cfg.stage2_overrides == ["max_steps=3"] and cfg.out == str(started)


def test_rows_trained_apart_share_one_table_and_a_given_final_model_is_scored_as_is(tmp_path: Path) -> None:
    recipe, out = _recipe(tmp_path / "recipe"), tmp_path / "ablation"
    console = Console(quiet=True)
    shipped = tmp_path / "shipped" / "model"  # scored by its parent folder's name (the fake)
    calls: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        _fakes(mp, calls)
        # two processes side by side, each with its rows (sequential here; the file is shared under a lock)
        first = ablation.run_ablation(recipe, out, console, rows=["stage2-inbatch"])
        second = ablation.run_ablation(
            recipe, out, console, rows=["stage2-only", "unime-tiny"], final=shipped
        )
    assert list(first) == ["stage 1 + stage 2, in-batch negatives"]
    assert list(second) == [
        "stage 2 only",
        "stage 1 + stage 2, in-batch negatives",
        "stage 1 + stage 2 (unime-tiny)",
    ]  # the table's order, whichever process scored a row
    assert calls == [
        "recipe stage1",
        "train stage2-inbatch",
        "score stage2-inbatch",
        "recipe pretrain_long",
        "train stage2-only",
        "score stage2-only",
        "score shipped",
    ]  # no recipe stage 2: the given model is the row
    assert list(ablation.ROW_KEYS.values()) == list(
        ablation.row_trainers(recipe, out, TinyRecipeConfig(out=str(recipe)), console)
    )


def test_the_model_cards_ablation_section_is_replaced_not_repeated() -> None:
    from uniretrieve.tiny.model_card import ABLATION_HEADING, with_ablation

    card = "# unime-tiny\n\n## Scores\n\n| a |\n"
    once = with_ablation(card, "| old |", command="python -m uniretrieve.tiny.ablation --recipe r --out o")
    twice = with_ablation(once, "| new |", command="python -m uniretrieve.tiny.ablation --recipe r --out o")
    assert twice.count(ABLATION_HEADING) == 1 and "| new |" in twice and "| old |" not in twice
    assert twice.startswith(card.rstrip("\n")) and "--recipe r --out o" in twice
