"""The benchmarks run at a small size, so they never rot; their figures are printed, never asserted on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    env = {**os.environ, "RUNTIME__REQUEST_BACKOFF_FACTOR": "0.05"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_backfill_benchmark_runs_and_loads_every_row() -> None:
    output = run_bench("backfill.py", "--invoices", "300")
    assert "invoice-pipelines (arrow path)" in output and "DuckDB read_json (reference)" in output
    assert "time ratio connector / read_json" in output


def test_statuses_benchmark_runs_with_429s() -> None:
    output = run_bench(
        "statuses.py", "--ids", "30", "--latency", "0.01", "--concurrency", "1", "4", "--rate-429", "0.1"
    )
    assert "speed-up of the last row over sequential" in output


def test_incremental_benchmark_runs() -> None:
    output = run_bench("incremental.py", "--invoices", "300")
    assert "nothing changed" in output and "after a day changing" in output
