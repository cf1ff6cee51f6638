"""Results → the paper's published numbers beside ours (JSON) and rich tables laid out like the paper's tables.

Table 2 layout for retrieval (T→I then I→T, R@1 in the paper; we add R@5/R@10), Replace/Swap/Add for SugarCrepe,
Table 1 layout for MMEB (Cls, VQA, Ret, Gnd, IND, OOD, Overall) plus the per-dataset Table 9 layout.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from uniretrieve.eval.metrics import SUGARCREPE_GROUPS
from uniretrieve.eval.mmeb_tasks import MMEB_DATASETS
from uniretrieve.eval.paper import PaperRow


def paper_numbers(
    benchmark: str, row: PaperRow | None, scores: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The published numbers of `row` for `benchmark`, in the results' own layout (percent). None for MMEB-style
    folders with their own dataset table (`datasets.json`): the paper's numbers are for the 36 MMEB datasets."""
    if row is None or (scores is not None and scores.get("standard_table") is False):
        return None
    if benchmark in row.retrieval:
        t2i, i2t = row.retrieval[benchmark]
        return {"row": row.label, "t2i": {"R@1": t2i}, "i2t": {"R@1": i2t}}
    if benchmark == "sugarcrepe" and row.sugarcrepe is not None:
        return {"row": row.label, "groups": dict(zip(SUGARCREPE_GROUPS, row.sugarcrepe, strict=True))}
    if benchmark == "mmeb" and row.mmeb:
        return {"row": row.label, **row.mmeb, "datasets": dict(row.mmeb_datasets)}
    return None


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _delta(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return ""
    d = ours - paper
    color = "green" if d >= 0 else "red"
    return f"[{color}]{d:+.1f}[/{color}]"


def retrieval_table(res: dict[str, Any]) -> Table:
    s, paper = res["scores"], res.get("paper")
    t = Table(title=f"{res['title']} — zero-shot retrieval (%)")
    t.add_column("")
    for name in ("T→I", "I→T"):
        for k in ("R@1", "R@5", "R@10"):
            t.add_column(f"{name} {k}", justify="right")
    t.add_row("ours", *[_f(s[d][k]) for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10")])
    if paper:
        t.add_row(
            f"paper: {paper['row']}",
            *[_f(paper[d].get(k)) for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10")],
        )
        t.add_row(
            "Δ", *[_delta(s[d][k], paper[d].get(k)) for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10")]
        )
    t.caption = f"{s['images']} images, {s['texts']} texts"
    return t


def sugarcrepe_tables(res: dict[str, Any]) -> list[Table]:
    s, paper = res["scores"], res.get("paper")
    groups = [g for g in SUGARCREPE_GROUPS if g in s["groups"]]
    t = Table(title="SugarCrepe — accuracy (%), group = unweighted mean of its categories")
    t.add_column("")
    for g in groups:
        t.add_column(g, justify="right")
    t.add_row("ours", *[_f(s["groups"][g]["mean"]) for g in groups])
    t.add_row("ours (item-weighted)", *[_f(s["groups"][g]["weighted"]) for g in groups])
    if paper:
        t.add_row(f"paper: {paper['row']}", *[_f(paper["groups"].get(g)) for g in groups])
        t.add_row("Δ", *[_delta(s["groups"][g]["mean"], paper["groups"].get(g)) for g in groups])
    c = Table(title="SugarCrepe — per category")
    c.add_column("category")
    c.add_column("items", justify="right")
    c.add_column("accuracy (%)", justify="right")
    for name, v in s["categories"].items():
        c.add_row(name, str(v["items"]), _f(v["accuracy"]))
    return [t, c]


def mmeb_tables(res: dict[str, Any]) -> list[Table]:
    s, paper = res["scores"], res.get("paper")
    cols = ("Classification", "VQA", "Retrieval", "Grounding")
    t = Table(title=f"{res['title']} — precision@1 (%)")
    t.add_column("")
    for c in ("Cls", "VQA", "Ret", "Gnd", "IND", "OOD", "Overall (datasets)", "Overall (meta-task mean)"):
        t.add_column(c, justify="right")
    mt = s["meta_tasks"]
    t.add_row(
        f"ours ({s['n_datasets']}/{s.get('n_table', 36)} datasets)",
        *[_f(mt.get(c)) for c in cols],
        _f(s["IND"]),
        _f(s["OOD"]),
        _f(s["overall"]),
        _f(s["meta_task_mean"]),
    )
    if paper:
        t.add_row(
            f"paper: {paper['row']}",
            *[_f(paper.get(c)) for c in cols],
            _f(paper.get("IND")),
            _f(paper.get("OOD")),
            _f(paper.get("overall_36")),
            _f(paper.get("overall_reported")),
        )
    t.caption = (
        "Overall (datasets) is the official MMEB score: the mean over datasets. UniME Table 1 printed the mean of "
        "the four meta-task scores as 'Overall' for most rows; both are shown."
        + ("" if s["complete"] else " Not every dataset was run: aggregates cover the ones that were.")
    )
    d = Table(title="MMEB — per dataset precision@1 (%)")
    pd = (paper or {}).get("datasets", {})
    cols = ("meta-task", "dataset", "split", "rows", "ours") + (("paper", "Δ") if pd else ())
    for c in cols:
        d.add_column(c, justify="right" if c in ("rows", "ours", "paper", "Δ") else "left")
    table = s.get("table") or [
        {"name": x.name, "meta_task": x.meta_task, "ood": x.ood} for x in MMEB_DATASETS
    ]
    for ds in table:
        if ds["name"] not in s["datasets"]:
            continue
        v = s["datasets"][ds["name"]]
        p = pd.get(ds["name"])
        cells = [
            ds["meta_task"],
            ds["name"],
            "OOD" if ds["ood"] else "IND",
            str(v["rows"]),
            _f(v["precision@1"]),
        ]
        if pd:
            cells += [_f(p), _delta(v["precision@1"], p)]
        d.add_row(*cells)
    for name, v in s.get("extra_datasets", {}).items():
        cells = [v["meta_task"], name, "extra, not in Overall", str(v["rows"]), _f(v["precision@1"])]
        d.add_row(*cells, *(["", ""] if pd else []))
    return [t, d]


def tables(res: dict[str, Any]) -> list[Table]:
    kind = {"sugarcrepe": "sugarcrepe", "mmeb": "mmeb"}.get(res["benchmark"], "retrieval")
    if kind == "retrieval":
        return [retrieval_table(res)]
    if kind == "sugarcrepe":
        return sugarcrepe_tables(res)
    return mmeb_tables(res)


def print_report(res: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for t in tables(res):
        console.print(t)
    e = res.get("embedding", {})
    console.print(
        f"model {res['model'].get('model_id')} ({res['model'].get('family')}, prompts {res['model'].get('prompt_regime')}); "
        f"encoded {e.get('encoded', 0)}, from cache {e.get('from_cache', 0)}"
        + (f", {e['texts_truncated']} text(s) truncated" if e.get("texts_truncated") else "")
    )
    warning = (
        res["scores"].get("info", {}).get("warning") if isinstance(res["scores"].get("info"), dict) else None
    )
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if res.get("paper") is None:
        console.print("no published numbers for this model (pass --paper-row to compare with a paper row)")
