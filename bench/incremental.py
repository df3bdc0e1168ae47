"""Incremental runs cost what changed: a backfill, then runs with nothing changed and runs after business
days that changed a given share of the invoices, all into one DuckDB file; each against the backfill.

    python bench/incremental.py                             # 100,000 invoices x 5 lines, 1% a day, 3 rounds
    python bench/incremental.py --invoices 2000 --repeat 1  # the quick version CI runs

Order: the backfill; the emulator's first business days, which also add a column each (a schema that
grows; shown, and left out of the figures: DuckDB rewrites a table that got a column at its next
checkpoint, a one-off); `--repeat` rounds of a run after a day changing `--change-share` and a run with
nothing changed; then, `--repeat` times, each share of `--slope-shares` and `--change-share` in steady
state (every other round from the largest share down, so that a cost drifting over the days is not read as
a cost of the larger shares): a run reads the cursor's day, the day before it and the new day, so each
timed day comes after two settling days of the same share (run, not shown) and reads only days of its
share, as every run does when the business changes that much each day. "Proportional" is read off the
timed changed days: the median slope between every two of them of different shares (Theil-Sen, robust
to a slow run; see `fitted_line`) is what one more row loaded costs, against the backfill's cost per
row (less a nothing-changed run's fixed cost; 1.0 is proportional); the line through the medians at
that slope gives what any run that loads rows costs.

A run re-reads `lookback_days` (1) before the cursor's date as well, so "nothing changed" still reads the
invoices updated on the cursor's day and the day before (calendar days: after a weekend, only the cursor's),
and leaves out, unparsed, every invoice the destination holds with the same fingerprint: the table shows
what each run read, left out and loaded. Each change is read by three runs: its day's and the next two.
The emulator runs in this process and encodes each run's body before the run starts, and its objects are
frozen out of Python's cyclic collector (`gc.freeze`) before each run, so the timings are the pipeline's.

Those runs are timed inside this process. A scheduled job is a command that also starts Python, imports
dlt, pyarrow and DuckDB and exits: after all of them, `--command-runs` times `python -m pipelines run`
from start to exit, on a world of its own: a backfill into a destination of its own and runs with nothing
changed after it.
"""

from __future__ import annotations

import argparse
import gc
import mmap
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipelines.emulator.world as world_module
from pipelines.accelerate import accelerate_source, next_since_date
from pipelines.accelerate.config import resolve_settings
from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import duckdb_destination, make_pipeline, run_job

NOTHING_CHANGED_GOAL = 0.10  # issue 5: a run with nothing changed takes under a tenth of the backfill
SETTLING_DAYS = 2  # a run reads the cursor's day and the day before it: two days of a share fill its window
RESAMPLINGS = 1_000  # of the timed days, for the slope's interval
# issue 5's "proportional", strictly: one more row loaded costs no more than a row of the backfill. Stop 22
# reads the goal as a cost linear in the rows a run loads, with no part that grows with the stored tables
# (README, Performance): the line's fixed part and cost a row are printed, and the strict ratio beside them.
PROPORTIONAL = 1.0
PROBE_PAGES = 16_384  # 64 MiB of fresh memory, written once, for what a page fault costs on this machine
ROOT = Path(__file__).resolve().parents[1]  # also put on sys.path above, before the imports (E402)
COMMAND = ("-m", "pipelines", "run", "--only", "accelerate")  # `invoice-pipelines run`, as users schedule it
COMMAND_TIMEOUT_SECONDS = 1_800  # a backfill of 1,000,000 invoices takes ~1 minute
DLT_SETTINGS = (
    "SOURCES__",
    "DESTINATION__",
    "RUNTIME__",
    "NORMALIZE__",
    "LOAD__",
    "EXTRACT__",
    "DATA_WRITER__",
)


@dataclass
class CommandRuns:
    """The job as a command in a process of its own, wall seconds from its start to its exit."""

    backfill: float
    unchanged: list[float]
    invoices: int  # in the world when the command backfilled it


@dataclass
class Run:
    label: str
    seconds: float
    invoices: int
    left_out: int  # invoices read whose version the destination held already: not parsed, not loaded
    invoices_loaded: int
    lines_loaded: int
    kind: str  # "backfill", "unchanged", "changed", "settling" or "schema" (a day that also adds a column)
    share: float = 0.0  # of the invoices, changed by the day before the run
    cpu_seconds: float = 0.0  # this process's CPU time over the run, all threads, less the emulator's serving
    page_faults: int = 0  # minor page faults of this process over the run: mostly pages written first

    @property
    def rows_loaded(self) -> int:
        return self.invoices_loaded + self.lines_loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument(
        "--change-share", type=float, default=0.01, help="share of invoices a business day changes"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of (a changed day, a run with nothing changed), and days timed at each share",
    )
    parser.add_argument(
        "--slope-shares",
        default="0.005,0.02,0.05,0.1",
        help="comma-separated shares of invoices changed a day, each timed in steady state, for the slope",
    )
    parser.add_argument(
        "--command-runs",
        type=int,
        default=3,
        help="runs with nothing changed of the command in a process of its own, after its own backfill "
        "(0: none)",
    )
    args = parser.parse_args()
    if args.command_runs < 0:
        parser.error("--command-runs must be 0 or more")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        slope_shares = [float(share) for share in args.slope_shares.split(",") if share.strip()]
    except ValueError:
        parser.error("--slope-shares takes numbers such as 0.005,0.02")
    shares = sorted({args.change_share, *slope_shares})
    if len(shares) < 2 or not all(0 < share <= 1 for share in shares):
        parser.error(
            "--change-share and --slope-shares need two different shares, each above 0 and at most 1"
        )

    world = World(seed=42, invoices=args.invoices, lines_per_invoice=args.lines)
    with EmulatorServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-incremental-") as folder:
        config = resolve_settings(None, server.accelerate_base_url, None, None, None)
        pipeline = make_pipeline(
            "bench_incremental",
            destination=duckdb_destination(str(Path(folder) / "bench.duckdb")),
            pipelines_dir=str(Path(folder) / "dlt"),
        )
        cursor: str | None = None

        def timed_run(label: str, kind: str, share: float = 0.0) -> Run:
            nonlocal cursor
            server.warm(next_since_date(cursor, config))
            # The emulator's world (millions of Python objects) lives in this process, not in a scheduled
            # job's: without this, Python's cyclic collector scanned it in the middle of random runs,
            # 0.3 s at a time. Frozen, the collector sees only what the run itself makes.
            gc.freeze()
            served = server.serving_cpu_seconds
            faults_before = page_faults()
            started, cpu_started = time.perf_counter(), time.process_time()
            summary = run_job(
                pipeline,
                accelerate=accelerate_source(
                    api_key=server.accelerate_api_key, base_url=server.accelerate_base_url
                ),
                only="accelerate",
            )
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            faults = page_faults() - faults_before
            # a real API does not share the machine (its request is answered long before the run ends)
            cpu_seconds -= server.serving_cpu_seconds - served
            cursor = summary.cursor_after
            read = summary.accelerate_read
            return Run(
                label,
                seconds,
                read["invoices_read"],
                read["unchanged"],
                summary.rows.get("invoice", 0),
                summary.rows.get("invoice_line", 0),
                kind,
                share,
                cpu_seconds,
                faults,
            )

        def changed_day(share: float, kind: str = "changed") -> Run:
            world_module.DAILY_CHANGE_SHARE = share  # the emulator reads it when a day advances
            changes = world.advance_day()
            label = f"after a day changing {len(changes.invoices_changed):,} invoices ({percent(share)})"
            if changes.new_fields:
                return timed_run(f"{label}, adding {', '.join(changes.new_fields)}", "schema", share)
            return timed_run(label, kind, share)

        runs = [timed_run("backfill", "backfill")]
        while world.advances < len(world_module.NEW_FIELDS_BY_ADVANCE):
            runs.append(changed_day(args.change_share))
        for round_ in range(1, args.repeat + 1):
            runs.append(changed_day(args.change_share))
            runs.append(timed_run(f"nothing changed ({round_})", "unchanged"))
        for round_ in range(args.repeat):
            # Every other round goes from the largest share down: what a run costs drifts with what the
            # days before it left in the file (deleted rows pile up until DuckDB compacts a table), and
            # in one order only, that drift would read as a cost of the larger shares.
            for share in shares if round_ % 2 == 0 else reversed(shares):
                runs.extend(changed_day(share, "settling") for _ in range(SETTLING_DAYS))
                runs.append(changed_day(share))

    report(args, runs)
    if args.command_runs:
        # Last, and on a world of its own, so that nothing it leaves in this process or on the machine can
        # touch the runs above (with the command's runs right after the backfill, the slope read 1.16 to
        # 1.35 in five runs, 0.89 to 1.12 in three without); by now the first world has grown by a third.
        del world, server
        gc.unfreeze()
        report_commands(time_the_command(args), runs)


def time_the_command(args: argparse.Namespace) -> CommandRuns:
    """The command on a world made afresh, after two business days of the usual share (its first two,
    which add a column each): so the command's backfill reads about `--invoices`, and the window of a run
    with nothing changed holds two such days, as the windows of the runs with nothing changed above."""
    world = World(seed=42, invoices=args.invoices, lines_per_invoice=args.lines)
    world_module.DAILY_CHANGE_SHARE = args.change_share
    for _ in range(SETTLING_DAYS):
        world.advance_day()
    with EmulatorServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-command-") as folder:
        config = resolve_settings(None, server.accelerate_base_url, None, None, None)
        # the cursor a backfill leaves: the newest stamp, which the world keeps in local time
        newest = datetime.fromisoformat(world.max_last_update_date).replace(tzinfo=ZoneInfo(config.timezone))
        return command_runs(
            server,
            Path(folder) / "command",
            args.command_runs,
            backfill_since=next_since_date(None, config),
            then_since=next_since_date(newest.isoformat(), config),
            invoices=len(world.invoices),
        )


def command_runs(
    server: EmulatorServer, folder: Path, repeat: int, backfill_since: date, then_since: date, invoices: int
) -> CommandRuns:
    """The runs above are timed inside this process, as the job's own; a scheduled job is a command, which
    also starts Python, imports dlt, pyarrow and DuckDB, and exits. Timed here from start to exit: a
    backfill into a destination and state of their own, then `repeat` runs with nothing changed. The
    command sees none of the shell's dlt settings (a destination or source set there would receive this
    fake backfill or ask for other days than the emulator prepared) and, like the runs above under the
    project's `.dlt/config.toml`, sends no telemetry."""
    folder.mkdir()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(DLT_SETTINGS)},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "DLT_DATA_DIR": str(folder / "dlt"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "SOURCES__ACCELERATE__BASE_URL": server.accelerate_base_url,
        "SOURCES__ACCELERATE__API_KEY": server.accelerate_api_key,
    }

    def timed(since: date, nothing_changed: bool) -> float:
        server.warm(since)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, *COMMAND],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-20:])
            raise SystemExit(f"the command failed (exit status {result.returncode}):\n{tail}")
        # timed as meant: the body it asked for was the one prepared, and nothing changed loaded nothing
        expected = [f"asked for invoices since {since}"] + (
            ["rows loaded: nothing"] if nothing_changed else []
        )
        if not all(line in result.stdout for line in expected):
            raise SystemExit(f"the command did not run as timed ({', '.join(expected)}):\n{result.stdout}")
        return seconds

    backfill = timed(backfill_since, nothing_changed=False)
    return CommandRuns(backfill, [timed(then_since, nothing_changed=True) for _ in range(repeat)], invoices)


def report_commands(commands: CommandRuns, runs: list[Run]) -> None:
    unchanged = statistics.median(commands.unchanged)
    ratio = unchanged / commands.backfill
    in_process = statistics.median(run.seconds for run in runs if run.kind == "unchanged")
    print(
        f"as a command in a process of its own (`python {' '.join(COMMAND)}`, Python's start, imports and "
        f"exit included; a world and destination of its own, after the runs above): backfill of {commands.invoices:,} "
        f"invoices {commands.backfill:.2f} s, nothing changed {unchanged:.2f} s (median of "
        f"{len(commands.unchanged)}), {ratio:.3f} of the backfill (a figure: the goal is read on the job's "
        f"own time, above; a command also starts Python and imports dlt, ~0.6 s of any run); "
        f"inside this process, the backfill of {runs[0].invoices:,} invoices took {runs[0].seconds:.2f} s and "
        f"a run with nothing changed {in_process:.2f} s"
    )


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    backfill = runs[0]
    print(
        f"incremental runs on {args.invoices:,} invoices x {args.lines} lines into DuckDB "
        f"({os.cpu_count()} cores, {percent(args.change_share)} of invoices changed by each business day, "
        f"{args.repeat} round(s), extra days for the slope: {args.slope_shares})\n"
    )
    print(
        "| run | wall s | invoices read | invoices left out | invoices loaded | lines loaded | wall / backfill "
        "| invoices read / backfill | rows loaded / backfill |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in (run for run in runs if run.kind != "settling"):
        print(
            f"| {run.label} | {run.seconds:.2f} | {run.invoices:,} | {run.left_out:,} | "
            f"{run.invoices_loaded:,} | {run.lines_loaded:,} | {run.seconds / backfill.seconds:.3f} | "
            f"{read_share(run, backfill):.3f} | {loaded_share(run, backfill):.3f} |"
        )
    settling = sum(run.kind == "settling" for run in runs)
    print(f"\n({settling} settling days not shown: {SETTLING_DAYS} before each day timed in steady state)\n")
    unchanged = [run for run in runs if run.kind == "unchanged"]
    changed = [run for run in runs if run.kind == "changed"]
    fixed = statistics.median(run.seconds for run in unchanged)
    backfill_per_row = backfill.seconds / backfill.rows_loaded
    print(
        "| share changed a day | days | median rows loaded | median wall s | wall / backfill | wall / its share of the backfill |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for share in sorted({run.share for run in changed}):
        days = [run for run in changed if run.share == share]
        rows = statistics.median(run.rows_loaded for run in days)
        seconds = statistics.median(run.seconds for run in days)
        print(
            f"| {percent(share)} | {len(days)} | {rows:,.0f} | {seconds:.2f} | {seconds / backfill.seconds:.3f} | "
            f"{seconds / (rows * backfill_per_row):.1f} |"
        )
    print()
    ratio = fixed / backfill.seconds
    verdict = "met" if ratio < NOTHING_CHANGED_GOAL else "NOT met"
    print(
        f"ratio nothing changed / backfill: {ratio:.3f} (median of {len(unchanged)}; "
        f"goal < {NOTHING_CHANGED_GOAL}: {verdict})"
    )
    typical = [run for run in changed if run.share == args.change_share]
    ratio = statistics.median(run.seconds for run in typical) / backfill.seconds
    share = statistics.median(loaded_share(run, backfill) for run in typical)
    print(
        f"ratio changed day / backfill: {ratio:.3f} (median of {len(typical)} days changing "
        f"{percent(args.change_share)}; median rows loaded {share:.3f})"
    )
    marginal, low, high, intercept = marginal_cost(backfill, unchanged, changed)
    verdict = "met" if marginal <= PROPORTIONAL else "not met"
    print(
        f"marginal cost of one more row loaded on a changed day / backfill's cost per row: {marginal:.2f} "
        f"(median slope over {len(changed)} changed days; 95% of resamplings of the days: {low:.2f} to "
        f"{high:.2f}; the strict reading, <= {PROPORTIONAL}: {verdict}; a changed row also deletes the "
        f"version it replaces, which a backfill row appended into empty tables does not)"
    )
    cpu_marginal, cpu_low, cpu_high, _ = marginal_cost(
        on_cpu(backfill), [on_cpu(run) for run in unchanged], [on_cpu(run) for run in changed]
    )
    print(
        f"the same on the connector's CPU time (this process's, all threads, less the emulator's serving; "
        f"what the machine's other tenants take from wall time is not in it): {cpu_marginal:.2f} "
        f"(95%: {cpu_low:.2f} to {cpu_high:.2f})"
    )
    slope = marginal * backfill_cost_per_row(backfill, unchanged)
    print(
        f"a run that loads rows costs {intercept:.2f} s + {slope * 1e6:.1f} us a row loaded (the line through "
        f"the changed days; a run with nothing changed: {fixed:.2f} s, the rest of the fixed part is dlt's "
        f"load package); each share's median day lies within {off_the_line(changed, slope, intercept):.0%} "
        f"of the line"
    )
    report_page_faults(backfill, unchanged, changed, first_touch_seconds())


def report_page_faults(backfill: Run, unchanged: list[Run], changed: list[Run], touch: float) -> None:
    """The memory a row makes the kernel hand over, read off the same way as the seconds: a count, so
    steadier than either clock. A page written for the first time costs the kernel a fault (a VM's
    hypervisor may have to back the page too); a backfill reuses its buffers over hundreds of thousands of
    rows, while a changed day's few thousand are written into fresh ones (DuckDB copies a small insert
    three times before its commit). Priced at `touch` (seconds a fault), the difference, in backfill rows,
    is the part of the slope above that is the kernel's work rather than the connector's. Two counts lean
    the other way and are left in: the backfill, the process's first run, also faults in code and imports
    once, and the emulator's thread (here, not at a real API) faults as it sends, little for a prepared
    body."""
    unchanged_faults = [on_faults(run) for run in unchanged]
    per_row = backfill_cost_per_row(on_faults(backfill), unchanged_faults)
    if per_row <= 0:  # nothing to read a ratio against (a run with nothing to do faulted as much)
        print("fresh memory pages a row (minor page faults): not readable in this run")
        return
    ratio, low, high, _ = marginal_cost(
        on_faults(backfill), unchanged_faults, [on_faults(run) for run in changed]
    )
    worth = (ratio - 1) * per_row * touch / backfill_cost_per_row(backfill, unchanged)
    print(
        f"fresh memory pages a row (minor page faults): a backfill row {per_row:.2f}, one more row loaded on "
        f"a changed day {ratio * per_row:.2f} ({ratio:.2f}x; 95%: {low:.2f} to {high:.2f}); a page written "
        f"for the first time costs {touch * 1e6:.1f} us on this machine, so the difference is worth "
        f"{worth:+.2f} of a backfill row's wall time"
    )


def marginal_cost(
    backfill: Run, unchanged: list[Run], changed: list[Run]
) -> tuple[float, float, float, float]:
    """One more row loaded on a changed day against a row of the backfill, less what a run with nothing
    changed costs (dlt's start, its state: any run pays it), the fairer comparison: the ratio, the bounds
    of its 95% interval, and the fitted line's intercept in seconds."""
    per_row = backfill_cost_per_row(backfill, unchanged)
    slope, intercept = fitted_line(changed)
    low, high = sorted(bound / per_row for bound in slope_interval(changed))
    return slope / per_row, low, high, intercept


def off_the_line(changed: list[Run], slope: float, intercept: float) -> float:
    """How far the median day of any share is from the fitted line, as a share of what the line gives: a
    run whose cost grew faster than the rows it loads (with the stored tables, say) would stand off it."""
    worst = 0.0
    for share in {run.share for run in changed}:
        days = [run for run in changed if run.share == share]
        predicted = intercept + slope * statistics.median(run.rows_loaded for run in days)
        seconds = statistics.median(run.seconds for run in days)
        worst = max(worst, abs(seconds - predicted) / predicted if predicted > 0 else float("inf"))
    return worst


def backfill_cost_per_row(backfill: Run, unchanged: list[Run]) -> float:
    """A backfill row's cost (in whatever `seconds` holds: wall, CPU time or faults), less the median run
    with nothing changed: what any run pays (dlt's start, its state) is not a cost of rows."""
    return (backfill.seconds - statistics.median(run.seconds for run in unchanged)) / backfill.rows_loaded


def fitted_line(changed: list[Run]) -> tuple[float, float]:
    """Theil-Sen: the median of the slopes between every two days of different shares, and the intercept
    that puts the line through the medians. One run slowed by the machine or by a DuckDB checkpoint that
    compacts a table moves it little, where least squares would follow it. A flat line when the days
    cannot tell.

    Why not every two days: two days of the same share differ in rows only by the world's growth (a
    share of more invoices each round) and the day's draw, while the file drifts between them (deleted
    rows pile up until DuckDB compacts a table): their slope is that drift over a few hundred rows, read
    as a cost of rows, and it leans the median up (on 17 saved runs of this benchmark, by 0.00 to 0.18,
    0.05 in the median). Days of one share only are all paired."""
    pairs = [(a, b) for i, a in enumerate(changed) for b in changed[i + 1 :]]
    if any(a.share != b.share for a, b in pairs):
        pairs = [(a, b) for a, b in pairs if a.share != b.share]
    slopes = [
        (b.seconds - a.seconds) / (b.rows_loaded - a.rows_loaded)
        for a, b in pairs
        if b.rows_loaded != a.rows_loaded
    ]
    if not slopes:
        return 0.0, statistics.median(run.seconds for run in changed)
    slope = statistics.median(slopes)
    intercept = statistics.median(run.seconds for run in changed) - slope * statistics.median(
        run.rows_loaded for run in changed
    )
    return slope, intercept


def slope_interval(changed: list[Run], resamplings: int = RESAMPLINGS) -> tuple[float, float]:
    """Where 95% of the slopes fall when each share's days are drawn again, with replacement (a bootstrap
    within each share, so that every draw still pairs days of different shares): how far the figure can
    be trusted. On this 2-core machine it spans ±0.1 to 0.3 around the slope, as much as the slope moves
    between two runs of the benchmark, so a verdict near the goal says little alone. The backfill's cost
    per row it is compared with is taken as exact, so the ratio is less certain still."""
    draw = random.Random(0)
    by_share: dict[float, list[Run]] = {}
    for run in changed:
        by_share.setdefault(run.share, []).append(run)
    slopes = sorted(
        fitted_line([draw.choice(days) for days in by_share.values() for _ in days])[0]
        for _ in range(resamplings)
    )
    return slopes[int(0.025 * resamplings)], slopes[int(0.975 * resamplings) - 1]


def on_cpu(run: Run) -> Run:
    """The run as if timed by CPU time, so that one `marginal_cost` reads either clock."""
    return replace(run, seconds=run.cpu_seconds)


def on_faults(run: Run) -> Run:
    """The run as if its page faults were seconds, for the same `marginal_cost`."""
    return replace(run, seconds=float(run.page_faults))


def page_faults() -> int:
    """This process's minor page faults so far (Unix; the benchmarks run on Linux and macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def first_touch_seconds(pages: int = PROBE_PAGES, repeat: int = 5) -> float:
    """What a page fault costs here, priced the way the runs take them: private anonymous memory (what
    malloc, DuckDB and arrow map) written once, less writing it again (the loop's own cost), per fault
    counted, the median of a few tries. About 0.1-0.5 us on bare metal; several times that on this
    benchmark's VM, which is why it is printed with the faults."""
    size = mmap.PAGESIZE
    costs = []
    for _ in range(repeat):
        with mmap.mmap(-1, pages * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as memory:
            faults_before = page_faults()
            passes = []
            for _ in range(2):
                started = time.perf_counter()
                for offset in range(0, pages * size, size):
                    memory[offset] = 1
                passes.append(time.perf_counter() - started)
            faults = page_faults() - faults_before
        costs.append(max(passes[0] - passes[1], 0.0) / max(faults, 1))
    return statistics.median(costs)


def percent(share: float) -> str:
    """The share with as few decimals as show it (one at least): 1.0%, 0.05%, 0.333%."""
    for decimals in (1, 2):
        if abs(round(share * 100, decimals) - share * 100) < 1e-9:
            return f"{share:.{decimals}%}"
    return f"{share:.3%}"


def read_share(run: Run, backfill: Run) -> float:
    return run.invoices / backfill.invoices


def loaded_share(run: Run, backfill: Run) -> float:
    return run.rows_loaded / backfill.rows_loaded


if __name__ == "__main__":
    main()
