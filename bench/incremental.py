"""Incremental runs cost what changed: a backfill, then a run with nothing changed, then one after a business
day that changed a given share of the invoices, all into one DuckDB file.

    python bench/incremental.py                         # 100,000 invoices x 5 lines, 1% changed
    python bench/incremental.py --invoices 2000         # the quick version CI runs

A run re-reads `lookback_days` (1) before the cursor's date as well, so "nothing changed" still reads the
invoices updated on the last two days of history; the table shows how many rows each run read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipelines.emulator.world as world_module
from pipelines.accelerate import accelerate_source
from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import duckdb_destination, make_pipeline, run_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument(
        "--change-share", type=float, default=0.01, help="share of invoices a business day changes"
    )
    args = parser.parse_args()

    world = World(seed=42, invoices=args.invoices, lines_per_invoice=args.lines)
    world_module.DAILY_CHANGE_SHARE = args.change_share  # the emulator reads it when a day advances
    with EmulatorServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-incremental-") as folder:
        pipeline = make_pipeline(
            "bench_incremental",
            destination=duckdb_destination(str(Path(folder) / "bench.duckdb")),
            pipelines_dir=str(Path(folder) / "dlt"),
        )

        def timed_run(label: str) -> tuple[str, float, int, int]:
            started = time.perf_counter()
            summary = run_job(
                pipeline,
                accelerate=accelerate_source(
                    api_key=server.accelerate_api_key, base_url=server.accelerate_base_url
                ),
                only="accelerate",
            )
            seconds = time.perf_counter() - started
            return label, seconds, summary.rows.get("invoice", 0), summary.rows.get("invoice_line", 0)

        rows = [timed_run("backfill")]
        rows.append(timed_run("nothing changed"))
        changes = world.advance_day()
        rows.append(timed_run(f"after a day changing {len(changes.invoices_changed):,} invoices"))

    print(f"incremental runs on {args.invoices:,} invoices x {args.lines} lines into DuckDB")
    print(f"{'run':<44}{'wall s':>9}{'invoices':>10}{'lines':>10}{'of backfill':>13}")
    backfill_seconds = rows[0][1]
    for label, seconds, invoices, lines in rows:
        print(f"{label:<44}{seconds:>9.2f}{invoices:>10,}{lines:>10,}{seconds / backfill_seconds:>13.1%}")


if __name__ == "__main__":
    main()
