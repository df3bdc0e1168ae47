"""Incremental runs cost what changed: a backfill, then rounds of a run with nothing changed and a run after a
business day that changed a given share of the invoices, all into one DuckDB file; each against the backfill.

    python bench/incremental.py                             # 100,000 invoices x 5 lines, 1% a day, 3 rounds
    python bench/incremental.py --invoices 2000 --repeat 1  # the quick version CI runs

A run re-reads `lookback_days` (1) before the cursor's date as well, so "nothing changed" still reads the
invoices updated on the cursor's day and the day before (calendar days: after a weekend, only the cursor's).
In the emulator's world an invoice updated after the day it was raised is updated on one of the next 25
business days that have happened, so the last days of history gather the updates of invoices raised just
before them: a business day holds ~1.1% of the invoices, rising over the last five weeks to ~2.3% on the day
before the last and ~3.5% on the last. The first round reads ~6% of the rows, the second ~4-5% (the last day
of history is still in its window), later ones ~1-2%: the table shows what each run read, and what it loaded
(an invoice the destination holds with the same fingerprint is left out). The emulator runs in
this process and encodes each run's body before the run starts, so the timings are the pipeline's.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    invoices_loaded: int
    lines_loaded: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument(
        "--change-share", type=float, default=0.01, help="share of invoices a business day changes"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of (nothing changed, a business day, changed day)"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

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
            read = summary.accelerate_read
            return Run(
                label,
                seconds,
                read["invoices_read"],
                read["lines_read"],
                summary.rows.get("invoice", 0),
                summary.rows.get("invoice_line", 0),
            )

        backfill = timed_run("backfill")
        unchanged, changed = [], []
        for round_ in range(1, args.repeat + 1):
            unchanged.append(timed_run(f"nothing changed ({round_})"))
            changes = world.advance_day()
            changed.append(
                timed_run(f"after a day changing {len(changes.invoices_changed):,} invoices ({round_})")
            )

    report(args, backfill, unchanged, changed)


def report(args: argparse.Namespace, backfill: Run, unchanged: list[Run], changed: list[Run]) -> None:
    print(
        f"incremental runs on {args.invoices:,} invoices x {args.lines} lines into DuckDB "
        f"({os.cpu_count()} cores, {args.change_share:.0%} of invoices changed by each business day, "
        f"{args.repeat} round(s))\n"
    )
    print(
        "| run | wall s | invoices read | lines read | invoices loaded | lines loaded | wall / backfill "
        "| rows read / backfill | rows loaded / backfill |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in [backfill, *(run for pair in zip(unchanged, changed, strict=True) for run in pair)]:
        print(
            f"| {run.label} | {run.seconds:.2f} | {run.invoices:,} | {run.lines:,} | "
            f"{run.invoices_loaded:,} | {run.lines_loaded:,} | {run.seconds / backfill.seconds:.3f} | "
            f"{read_share(run, backfill):.3f} | {loaded_share(run, backfill):.3f} |"
        )
    print()
    ratio = statistics.median(run.seconds for run in unchanged) / backfill.seconds
    verdict = "met" if ratio < NOTHING_CHANGED_GOAL else "NOT met"
    print(
        f"ratio nothing changed / backfill: {ratio:.3f} (median of {len(unchanged)}; "
        f"goal < {NOTHING_CHANGED_GOAL}: {verdict})"
    )
    ratio = statistics.median(run.seconds for run in changed) / backfill.seconds
    share = statistics.median(loaded_share(run, backfill) for run in changed)
    print(
        f"ratio changed day / backfill: {ratio:.3f} (median of {len(changed)}; median rows loaded {share:.3f})"
    )
    # What a changed day costs beyond a nothing-changed run, per row it loads, against the backfill's cost
    # per row: 1.0 is proportional. The nothing-changed run is the fixed part (starting dlt, reading state,
    # re-reading the lookback window, one merge per table).
    fixed = statistics.median(run.seconds for run in unchanged)
    extra = statistics.median(
        (run.seconds - fixed) / backfill.seconds / max(loaded_share(run, backfill), 1e-9) for run in changed
    )
    print(
        f"ratio changed day's cost per row loaded above a nothing-changed run / backfill's: {extra:.2f} "
        f"(median of {len(changed)}; 1.0 is proportional)"
    )


def read_share(run: Run, backfill: Run) -> float:
    return (run.invoices + run.lines) / (backfill.invoices + backfill.lines)


def loaded_share(run: Run, backfill: Run) -> float:
    return (run.invoices_loaded + run.lines_loaded) / (backfill.invoices_loaded + backfill.lines_loaded)


if __name__ == "__main__":
    main()
