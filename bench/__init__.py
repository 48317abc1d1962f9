"""Benchmarks for imagegate (``python -m bench``); never part of the pass/fail test suite.

Each scenario of the performance spec runs side by side with its reference (a minimal FastAPI
app on the gateway's uvicorn options) in one invocation; the report gives the gateway's figures
as ratios of the reference's. Reports go to ``bench/reports/`` (git-ignored).
"""
