"""Incremental runs cost what changed: a backfill, then a run with nothing changed, then one after a business
day that changed a given share of the invoices, all into one DuckDB file; each timed against the backfill.

    python bench/incremental.py                         # 100,000 invoices x 5 lines, 1% changed (issue 5)
    python bench/incremental.py --invoices 2000         # the quick version CI runs

A run re-reads `lookback_days` (1) before the cursor's date as well, so "nothing changed" still reads the
invoices updated on the last two days of history; the table shows how many rows each run read. The emulator
runs in this process and encodes each run's body before the run starts, so the timings are the pipeline's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipelines.emulator.world as world_module
from pipelines.accelerate import accelerate_source, next_since_date
from pipelines.accelerate.config import resolve_settings
from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import duckdb_destination, make_pipeline, run_job

NOTHING_CHANGED_GOAL = 0.10  # issue 5: a run with nothing changed takes under a tenth of the backfill


@dataclass
class Run:
    label: str
    seconds: float
    invoices: int
    lines: int


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
        config = resolve_settings(None, server.accelerate_base_url, None, None, None)
        pipeline = make_pipeline(
            "bench_incremental",
            destination=duckdb_destination(str(Path(folder) / "bench.duckdb")),
            pipelines_dir=str(Path(folder) / "dlt"),
        )
        cursor: str | None = None

        def timed_run(label: str) -> Run:
            nonlocal cursor
            server.warm(next_since_date(cursor, config))
            started = time.perf_counter()
            summary = run_job(
                pipeline,
                accelerate=accelerate_source(
                    api_key=server.accelerate_api_key, base_url=server.accelerate_base_url
                ),
                only="accelerate",
            )
            seconds = time.perf_counter() - started
            cursor = summary.cursor_after
            return Run(label, seconds, summary.rows.get("invoice", 0), summary.rows.get("invoice_line", 0))

        backfill = timed_run("backfill")
        unchanged = timed_run("nothing changed")
        changes = world.advance_day()
        changed = timed_run(f"after a day changing {len(changes.invoices_changed):,} invoices")

    report(args, backfill, unchanged, changed)


def report(args: argparse.Namespace, backfill: Run, unchanged: Run, changed: Run) -> None:
    print(
        f"incremental runs on {args.invoices:,} invoices x {args.lines} lines into DuckDB "
        f"({os.cpu_count()} cores, {args.change_share:.0%} of invoices changed by the business day)\n"
    )
    print("| run | wall s | invoices read | lines read | wall / backfill | rows read / backfill |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in (backfill, unchanged, changed):
        print(
            f"| {run.label} | {run.seconds:.2f} | {run.invoices:,} | {run.lines:,} | "
            f"{run.seconds / backfill.seconds:.3f} | {rows_share(run, backfill):.3f} |"
        )
    print()
    ratio = unchanged.seconds / backfill.seconds
    verdict = "met" if ratio < NOTHING_CHANGED_GOAL else "NOT met"
    print(f"ratio nothing changed / backfill: {ratio:.3f} (goal < {NOTHING_CHANGED_GOAL}: {verdict})")
    print(
        f"ratio changed day / backfill: {changed.seconds / backfill.seconds:.3f} "
        f"(for {rows_share(changed, backfill):.3f} of the backfill's rows read)"
    )
    # Proportional: beyond the fixed cost of a run (the nothing-changed run), each extra row read costs
    # what a row costs in the backfill.
    extra_rows = (changed.invoices + changed.lines) - (unchanged.invoices + unchanged.lines)
    if extra_rows > 0:
        per_row = (changed.seconds - unchanged.seconds) / extra_rows
        backfill_per_row = backfill.seconds / (backfill.invoices + backfill.lines)
        print(
            f"ratio cost per extra row / backfill's cost per row: {per_row / backfill_per_row:.2f} "
            "(extra: the changed day over nothing changed; 1.0 is proportional)"
        )


def rows_share(run: Run, backfill: Run) -> float:
    return (run.invoices + run.lines) / (backfill.invoices + backfill.lines)


if __name__ == "__main__":
    main()
