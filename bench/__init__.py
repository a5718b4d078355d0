"""Benchmarks: each script measures one comparison in one run on one machine (see docs/BENCHMARKS.md).

Run them from the repository root as `python -m bench.<script> ... --json FILE`.
"""
