"""What keeps a run's memory flat that no benchmark would notice breaking: pandas, where it is installed,
must not be imported by a run (pyarrow's `pa.array`, `pa.scalar`, `to_numpy` and `as_py` on timestamps
import it on first use: 41 MB resident). Figures themselves are measured by bench/backfill.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUNS = textwrap.dedent(
    """
    import sys
    from pipelines.accelerate import accelerate_source
    from pipelines.emulator import EmulatorServer, World
    from pipelines.invoices import duckdb_destination, make_pipeline, run_job

    world = World(seed=5, invoices=400, lines_per_invoice=3)
    with EmulatorServer(world) as server:
        assert "pandas" not in sys.modules, "the emulator imported pandas: this test would mean nothing"
        pipeline = make_pipeline(
            "no_pandas", destination=duckdb_destination("no_pandas.duckdb"), pipelines_dir="pipelines"
        )
        for _ in range(2):  # a backfill, then a run that reads back what is stored
            summary = run_job(
                pipeline,
                accelerate=accelerate_source(
                    api_key=server.accelerate_api_key, base_url=server.accelerate_base_url
                ),
                only="accelerate",
            )
            print("loaded", summary.rows.get("invoice", 0), "read", summary.accelerate_read["invoices_read"])
            world.advance_day()
    print("pandas imported:", "pandas" in sys.modules)
    """
)


def test_a_backfill_and_an_incremental_run_never_import_pandas(tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="only means something where pandas is installed")
    finished = subprocess.run(
        [sys.executable, "-c", RUNS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DLT_DATA_DIR": str(tmp_path / "dlt")},
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    output = finished.stdout.strip().splitlines()
    backfill, incremental = (line.split() for line in output[:2])
    assert int(backfill[1]) == 400
    assert 0 < int(incremental[1]) < int(incremental[3]), "the second run must load some and skip some"
    assert output[-1] == "pandas imported: False"
    # dlt warns on every load that dedup_sort is ignored when staged rows are declared unique: filtered
    assert "dedup_sort" not in finished.stderr
