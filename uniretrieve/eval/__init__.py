"""Benchmark evaluation as the paper runs it (docs/benchmarks.md).

Data flow: `datasets_*.py` read a public layout into `records.py` (sources + ground truth as indices) →
`embedder.py` embeds the unique sources once per model (`cache.py`: shard directories) → `metrics.py` scores →
`report.py` puts `paper.py`'s published numbers beside ours. `runner.py` ties the steps; `cli/eval.py` is the command.
"""
