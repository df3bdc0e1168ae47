"""The benchmarks run at a small size, so they never rot: each prints a well-formed table of positive figures.
Their timings are never asserted on (CI machines vary); the full-size figures are in the README and bench/README.md."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKFILL_LABELS = {
    "connector -> DuckDB (arrow path)",
    "DuckDB read_json (reference)",
    "dlt rest_api, defaults",
    "dlt rest_api, parquet",
    "connector -> Postgres",
    "connector -> filesystem (Delta)",
}
RATIO = re.compile(r"^ratio (?P<name>[^:]+): (?P<value>\d+\.\d+) \((?P<goal>[^)]*)\)$", re.MULTILINE)


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


def markdown_table(output: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header row begins with `header_start`, as header -> cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start} |"))
    header = cells(lines[start])
    assert set(lines[start + 1].replace(" ", "")) == {"|", "-"}, lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        row = cells(line)
        assert len(row) == len(header), line
        rows.append(dict(zip(header, row, strict=True)))
    assert rows, f"table {header_start!r} has no rows"
    return rows


def cells(line: str) -> list[str]:
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.strip() for cell in line[2:-2].split(" | ")]


def positive(cell: str) -> float:
    value = float(cell.replace(",", ""))
    assert value > 0, cell
    return value


def ratios(output: str) -> dict[str, float]:
    found = {match["name"]: positive(match["value"]) for match in RATIO.finditer(output)}
    assert found, output
    return found


def test_backfill_benchmark_prints_every_path_side_by_side() -> None:
    output = run_bench("backfill.py", "--invoices", "300")
    rows = markdown_table(output, "path")
    assert {row["path"] for row in rows} == BACKFILL_LABELS
    for row in rows:
        if row["path"] == "connector -> filesystem (Delta)" and row["wall s"].startswith("n/a ("):
            continue  # optional: the connector may refuse the filesystem destination
        for column in ("wall s", "invoices/s", "lines/s", "peak RSS MB", "wall / connector->DuckDB"):
            positive(row[column])
    assert {"connector / read_json", "rest_api defaults / connector", "rest_api parquet / connector"} <= set(
        ratios(output)
    )
    assert re.search(
        r"^connector -> DuckDB peak RSS: [\d,]+ MB \(goal < 300 MB: (met|NOT met)\)$", output, re.M
    )


def test_backfill_benchmark_selects_paths_and_compares_sizes() -> None:
    output = run_bench("backfill.py", "--invoices", "200", "400", "--paths", "connector,read_json")
    assert [row["path"] for row in markdown_table(output, "path")] == [
        "connector -> DuckDB (arrow path)",
        "DuckDB read_json (reference)",
    ]
    sizes = markdown_table(output.split("peak RSS by world size", 1)[1], "path")
    assert [row["path"] for row in sizes] == [
        "connector -> DuckDB (arrow path)",
        "DuckDB read_json (reference)",
    ]
    for row in sizes:
        for column in ("200 invoices", "400 invoices"):
            match = re.fullmatch(r"([\d,]+) MB in (\d+\.\d) s", row[column])
            assert match, row[column]
            positive(match[1])
    assert "peak RSS under 300 MB at every size:" in output


def test_backfill_benchmark_refuses_an_unknown_path() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "backfill.py"), "--paths", "connector,csv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown path(s) csv" in result.stderr


def test_statuses_benchmark_runs_with_429s() -> None:
    output = run_bench(
        "statuses.py", "--ids", "30", "--latency", "0.01", "--concurrency", "1", "4", "--rate-429", "0.1"
    )
    assert "speed-up of the last row over sequential" in output


def test_incremental_benchmark_times_each_run_against_the_backfill() -> None:
    output = run_bench("incremental.py", "--invoices", "300", "--repeat", "2", "--slope-shares", "0.05,0.1")
    rows = markdown_table(output, "run")
    labels = [row["run"] for row in rows]
    day = r"after a day changing ([\d,]+) invoices \((\d+\.\d)%\)"
    assert labels[0] == "backfill"
    # the emulator's first two days add a column each; shown apart from the plain days
    assert re.fullmatch(day + ", adding currency_code", labels[1])
    assert re.fullmatch(day + ", adding payment_terms_days", labels[2])
    unchanged, days = rows[4:7:2], rows[3:7:2] + rows[7:]
    assert [row["run"] for row in unchanged] == ["nothing changed (1)", "nothing changed (2)"]
    # each after two settling days of its share (not shown); every other round from the largest share down
    sweeps = ["1.0", "5.0", "10.0", "10.0", "5.0", "1.0"]
    assert [re.fullmatch(day, row["run"])[2] for row in days] == ["1.0", "1.0", *sweeps]
    for row in rows:
        for column in ("wall s", "invoices read", "wall / backfill", "invoices read / backfill"):
            positive(row[column])
    assert rows[0]["wall / backfill"] == "1.000"
    assert rows[0]["invoices loaded"] == "300" and rows[0]["lines loaded"] == "1,500"
    # Nothing changed: the lookback window is read again, and nothing of it is loaded again.
    assert all(row["invoices loaded"] == "0" and row["lines loaded"] == "0" for row in unchanged)
    assert all(row["invoices left out"] == row["invoices read"] for row in unchanged)
    assert rows[0]["invoices left out"] == "0"
    for row in rows[1:3] + days:
        changed = int(re.match(day, row["run"])[1].replace(",", ""))
        assert int(row["invoices loaded"].replace(",", "")) == changed
    assert "(12 settling days not shown: 2 before each day timed in steady state)" in output
    shares = markdown_table(output, "share changed a day")
    assert [row["share changed a day"] for row in shares] == ["1.0%", "5.0%", "10.0%"]
    assert [row["days"] for row in shares] == ["4", "2", "2"]
    assert all(positive(row["median wall s"]) for row in shares)
    assert {"nothing changed / backfill", "changed day / backfill"} <= set(ratios(output))
    # Below the noise of a 300-invoice run the slope can be negative, so only its presence is checked.
    assert re.search(
        r"^marginal cost of one more row loaded .*: -?\d+\.\d+ \(median slope over 8 changed days; 95% of "
        r"resamplings of the days: -?\d+\.\d+ to -?\d+\.\d+; the strict reading, <= 1\.0: (not )?met; .*\)$",
        output,
        re.M,
    )
    assert re.search(
        r"^the same on the connector's CPU time \(.*\): -?\d+\.\d+ \(95%: -?\d+\.\d+ to -?\d+\.\d+\)$",
        output,
        re.M,
    )
    assert re.search(
        r"^a run that loads rows costs -?\d+\.\d+ s \+ -?\d+\.\d us a row loaded \(.*\); each share's median "
        r"day lies within (\d+|inf)% of the line$",
        output,
        re.M,
    )
    assert re.search(
        r"^fresh memory pages a row \(minor page faults\): a backfill row \d+\.\d\d, one more row loaded on a "
        r"changed day -?\d+\.\d\d \(-?\d+\.\d\dx; 95%: -?\d+\.\d\d to -?\d+\.\d\d\); a page written for the "
        r"first time costs \d+\.\d us on this machine, so the difference is worth [+-]\d+\.\d\d of a backfill "
        r"row's wall time$",
        output,
        re.M,
    )
    command = re.search(
        r"^as a command in a process of its own \(`python -m pipelines run --only accelerate`, .*\): backfill of "
        r"([\d,]+) invoices (\d+\.\d\d) s, nothing changed (\d+\.\d\d) s \(median of 3\), (\d\.\d{3}) of the "
        r"backfill \(a figure: the goal is read on the job's own time, above; .*\); inside this process, the "
        r"backfill of 300 invoices took "
        r"(\d+\.\d\d) s and a run with nothing changed (\d+\.\d\d) s$",
        output,
        re.M,
    )
    assert command, output
    backfill, unchanged, ratio = (float(command[group]) for group in (2, 3, 4))
    assert abs(ratio - unchanged / backfill) < 0.01 and backfill > 0
    assert int(command[1].replace(",", "")) > 300  # a world of its own, two business days on
    assert float(command[5]) == float(rows[0]["wall s"])  # the in-process backfill, for comparison


def test_the_slope_pairs_only_days_of_different_shares() -> None:
    """Two days of one share differ in rows by a few (the world grew) and in time by the file's drift:
    paired, they would read that drift as a steep cost of rows."""
    bench = incremental_bench()

    def day(rows: int, seconds: float, share: float) -> Any:
        return bench.Run("day", seconds, rows, 0, rows, 0, "changed", share)

    days = [day(100, 1.0, 0.01), day(110, 1.5, 0.01), day(1000, 2.0, 0.1), day(1010, 2.5, 0.1)]
    slope, intercept = bench.fitted_line(days)
    assert slope == pytest.approx(1 / 900)  # all six pairs: 0.00138 (the two same-share pairs: 0.05)
    assert intercept == pytest.approx(1.75 - slope * 555)
    one_share = [day(100, 1.0, 0.01), day(200, 1.5, 0.01), day(300, 1.75, 0.01)]
    assert bench.fitted_line(one_share)[0] == pytest.approx(0.00375)  # one share: every two days


def test_a_cost_that_grows_faster_than_the_rows_stands_off_the_line() -> None:
    bench = incremental_bench()
    shares = [(500, 0.005), (1_000, 0.01), (2_000, 0.02), (5_000, 0.05)]

    def days(cost: Any) -> list[Any]:
        return [
            bench.Run("day", cost(rows), rows, 0, rows, 0, "changed", share) for rows, share in shares * 2
        ]

    linear = days(lambda rows: 0.2 + 1e-5 * rows)
    assert bench.off_the_line(linear, *bench.fitted_line(linear)) == pytest.approx(0.0, abs=1e-9)
    quadratic = days(lambda rows: 0.2 + 1e-7 * rows**2)
    assert bench.off_the_line(quadratic, *bench.fitted_line(quadratic)) > 0.25


def test_the_slope_interval_is_the_slope_when_the_days_lie_on_a_line() -> None:
    bench = incremental_bench()
    days = [
        bench.Run("day", 0.3 + 1e-5 * rows, rows, 0, rows, 0, "changed", share)
        for rows, share in [(500, 0.005), (1_000, 0.01), (2_000, 0.02), (5_000, 0.05)] * 2
    ]
    assert bench.slope_interval(days) == pytest.approx((1e-5, 1e-5))
    days[0].seconds += 0.1  # one slow day: the interval widens, and still holds the slope
    low, high = bench.slope_interval(days)
    assert low <= 1e-5 <= high and high > low


def test_the_marginal_cost_on_wall_and_cpu_time() -> None:
    """Against a backfill row less the median run with nothing to do, on either clock."""
    bench = incremental_bench()

    def run(kind: str, rows: int, seconds: float, cpu_seconds: float, share: float = 0.0) -> Any:
        return bench.Run(kind, seconds, rows, 0, rows, 0, kind, share, cpu_seconds)

    # wall: a backfill row 10 us (6.1 s less the median run with nothing to do, 0.1 s, over 600,000 rows),
    # a changed row 12 us; CPU: 8 and 6 us
    backfill = run("backfill", 600_000, 6.1, 4.9)
    unchanged = [run("unchanged", 0, 0.1, 0.1), run("unchanged", 0, 0.3, 0.05), run("unchanged", 0, 0.1, 0.1)]
    changed = [
        run("changed", rows, 0.3 + 12e-6 * rows, 0.2 + 6e-6 * rows, share)
        for rows, share in [(5_000, 0.01), (10_000, 0.02), (50_000, 0.1)] * 2
    ]
    marginal, low, high, intercept = bench.marginal_cost(backfill, unchanged, changed)
    assert (marginal, low, high, intercept) == pytest.approx((1.2, 1.2, 1.2, 0.3))
    unchanged_on_cpu = [bench.on_cpu(run) for run in unchanged]
    assert [run.seconds for run in unchanged_on_cpu] == [0.1, 0.05, 0.1]
    on_cpu = bench.marginal_cost(
        bench.on_cpu(backfill), unchanged_on_cpu, [bench.on_cpu(run) for run in changed]
    )
    assert on_cpu == pytest.approx((0.75, 0.75, 0.75, 0.2))


def test_the_page_faults_of_a_changed_row_against_a_backfill_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Counted like the seconds, against a backfill row less the median run with nothing to do, and
    priced at the machine's cost of a fault against a backfill row's wall time."""
    bench = incremental_bench()

    def run(kind: str, rows: int, seconds: float, faults: int, share: float = 0.0) -> Any:
        return bench.Run(kind, seconds, rows, 0, rows, 0, kind, share, 0.0, faults)

    # a backfill row: 0.3 faults (211,000 less the median of the runs with nothing to do, 31,000, over
    # 600,000 rows) and 10 us of wall time (7.1 s less 1.1 s); a changed row: 0.6 faults. Without the runs
    # with nothing to do taken out, a backfill row would read 0.35 faults and 11.8 us.
    backfill = run("backfill", 600_000, 7.1, 211_000)
    unchanged = [
        run("unchanged", 0, 1.1, 31_000),
        run("unchanged", 0, 1.3, 35_000),
        run("unchanged", 0, 1.1, 31_000),
    ]
    changed = [
        run("changed", rows, 0.3 + 12e-6 * rows, 33_000 + 6 * rows // 10, share)
        for rows, share in [(5_000, 0.01), (10_000, 0.02), (50_000, 0.1)] * 2
    ]
    bench.report_page_faults(backfill, unchanged, changed, 4e-6)
    # 0.3 faults more a row at 4 us: 1.2 us, 0.12 of a backfill row's 10 us
    assert capsys.readouterr().out.strip() == (
        "fresh memory pages a row (minor page faults): a backfill row 0.30, one more row loaded on a changed "
        "day 0.60 (2.00x; 95%: 2.00 to 2.00); a page written for the first time costs 4.0 us on this machine, "
        "so the difference is worth +0.12 of a backfill row's wall time"
    )
    assert [bench.on_faults(run).seconds for run in unchanged] == [31_000.0, 35_000.0, 31_000.0]
    # a backfill that faulted no more than a run with nothing to do gives nothing to read against
    bench.report_page_faults(run("backfill", 600_000, 7.1, 31_000), unchanged, changed, 4e-6)
    assert (
        capsys.readouterr().out.strip()
        == "fresh memory pages a row (minor page faults): not readable in this run"
    )


def test_the_cost_of_a_fresh_page_is_measured() -> None:
    cost = incremental_bench().first_touch_seconds(pages=4_096, repeat=3)
    assert 0 < cost < 1e-3  # a few microseconds at most on any machine; the figure itself is printed


def incremental_bench() -> Any:
    """bench/incremental.py as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("bench_incremental", ROOT / "bench" / "incremental.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    return bench
