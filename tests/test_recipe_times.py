"""The recipe's step times survive a resumed run: the model card reports the whole recipe, not its last part."""

from __future__ import annotations

import json
from pathlib import Path

from uniretrieve.tiny.recipe import StepTimes


def test_step_times_accumulate_across_resumed_runs(tmp_path: Path) -> None:
    first = StepTimes(tmp_path)
    assert first.run("data", False, lambda: "d") == "d"
    first.run("pretrain", False, lambda: None)
    recorded = json.loads((tmp_path / "step_seconds.json").read_text())
    assert set(recorded) == {"data", "pretrain"}

    resumed = StepTimes(tmp_path)  # a later run: finished steps are skipped and keep their first time
    resumed.run("data", True, lambda: "d")
    resumed.run("stage1", False, lambda: None)
    assert resumed.seconds["data"] == recorded["data"] and set(resumed.seconds) == {
        "data",
        "pretrain",
        "stage1",
    }
    assert resumed.total == sum(resumed.seconds.values())
