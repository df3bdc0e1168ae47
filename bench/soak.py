"""Soak: many business days against the emulator with faults on, the job run each day and again when it
gives up, and the tables compared with the emulator's world after every day. Not a speed benchmark.

    python bench/soak.py                             # 30 days, 2,000 invoices, 20% of calls faulted
    python bench/soak.py --days 3 --invoices 300     # the small version the suite runs

Faults are drawn per call, in equal shares of --fault-rate: 429 with Retry-After, 500/503, a body cut off
mid-way (full Content-Length, half the bytes, connection closed) and an answer slower than the request
timeout. On --outage-days days Accelerate also fails more times in a row than the retry budget, so the run
gives up and is run again. A Qvalia id whose calls all failed is what the job promises: left as it was and
polled again next run; it is excused from that day's comparison only, and after the last day one run with
the faults off must leave the tables exactly equal to the world. Exit status 1 when a row was lost,
duplicated, wrong or left over, or when a run failed with anything but the job's own one-line errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from pipelines.accelerate import accelerate_source
from pipelines.emulator import EmulatorServer, Faults, World
from pipelines.errors import PipelineError
from pipelines.invoices import duckdb_destination, make_pipeline, run_job
from pipelines.qvalia import qvalia_source

FAULT_KINDS = ("429", "5xx", "drop", "timeout")
LONDON = ZoneInfo("Europe/London")
# How the world's values look once loaded (the same rules as tests/conftest.py, kept apart from the tests).
TIMESTAMP_FIELDS = {"creation_date", "last_update_date"}
DATE_FIELDS = {"tax_date", "due_date", "sent_date", "paid_date", "void_date", "invoice_date"}
STATUS_TIMESTAMPS = ("sent_at", "paid_at", "cancelled_at")


@dataclass
class Differences:
    """Rows of one comparison that are not what the world says, by kind; all must be zero."""

    lost: int = 0
    duplicates: int = 0
    wrong: int = 0
    extra: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, count: int, example: str) -> None:
        if count:
            setattr(self, kind, getattr(self, kind) + count)
            if len(self.examples) < 5:
                self.examples.append(f"{kind}: {example}")

    @property
    def total(self) -> int:
        return self.lost + self.duplicates + self.wrong + self.extra


@dataclass
class Outcome:
    """What the soak did and found; `--json` writes it for the test suite."""

    days: int = 0
    runs: int = 0
    reruns: int = 0
    gave_up: list[str] = field(default_factory=list)
    unexpected_errors: list[str] = field(default_factory=list)
    qvalia_ids_deferred: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicates: int = 0
    wrong: int = 0
    extra: int = 0
    days_with_differences: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls_given_up(self) -> int:
        """Calls whose fault ended a retry loop: the last attempt of each give-up."""
        return len(self.gave_up) + self.qvalia_ids_deferred

    @property
    def faults_unaccounted(self) -> int:
        """Faults served that the connector neither retried nor gave up on (must be 0; a retry without a
        fault, say a timeout of a slow machine, makes it negative)."""
        return sum(self.faults.values()) - sum(self.retries.values()) - self.calls_given_up

    @property
    def ok(self) -> bool:
        return self.lost + self.duplicates + self.wrong + self.extra == 0 and not self.unexpected_errors


class ConnectorLog(logging.Handler):
    """Counts what the connector reports through its loggers: each retry, and each Qvalia id given up on."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: Counter[str] = Counter()
        self.failed_ids: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "; retrying in " in message:
            self.retries["accelerate" if record.name.startswith("pipelines.accelerate") else "qvalia"] += 1
        elif "polled again next run" in message and isinstance(record.args, tuple):
            self.failed_ids.add(str(record.args[-1]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(
        RUNTIME__REQUEST_TIMEOUT=str(args.timeout),
        RUNTIME__REQUEST_MAX_ATTEMPTS=str(args.max_attempts),
        RUNTIME__REQUEST_BACKOFF_FACTOR=str(args.backoff),
        RUNTIME__REQUEST_MAX_RETRY_DELAY=str(args.max_retry_delay),
    )
    share = args.fault_rate / len(FAULT_KINDS)
    print(
        f"soak: {args.days} business days, {args.invoices:,} invoices (seed {args.seed}); faults on "
        f"{args.fault_rate:.0%} of calls, {share:.1%} each of 429 (Retry-After {args.retry_after:g} s), "
        f"500/503, body cut mid-way, answer after {args.slow:g} s against a {args.timeout:g} s timeout; "
        f"{args.max_attempts} attempts per call; an Accelerate outage on {args.outage_days} day(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        outcome = soak(args, Path(folder))
    print_outcome(outcome)
    if args.json:
        figures = asdict(outcome) | {"ok": outcome.ok, "faults_unaccounted": outcome.faults_unaccounted}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if outcome.ok else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="business days after the first load")
    parser.add_argument("--invoices", type=int, default=2_000, help="invoices in the world at the start")
    parser.add_argument("--seed", type=int, default=1, help="seed of the world and of the faults")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of calls faulted, 0 to 0.2")
    parser.add_argument("--retry-after", type=float, default=1, help="seconds in a 429's Retry-After")
    parser.add_argument("--timeout", type=float, default=0.5, help="the connector's read timeout, seconds")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds a slow answer takes (> --timeout)")
    parser.add_argument("--max-attempts", type=int, default=3, help="attempts per call (the default is 5)")
    parser.add_argument("--backoff", type=float, default=0.05, help="backoff factor, seconds")
    parser.add_argument(
        "--max-retry-delay", type=float, default=0.25, help="cap on one wait, seconds (caps Retry-After too)"
    )
    parser.add_argument("--outage-days", type=int, default=1, help="days Accelerate fails past the retries")
    parser.add_argument("--max-runs", type=int, default=10, help="runs per day before the soak stops")
    parser.add_argument("--json", help="also write the outcome to this file")
    args = parser.parse_args(argv)
    if not 0 < args.fault_rate <= 0.2:
        parser.error("--fault-rate must be above 0 and at most 0.2")
    if args.slow <= args.timeout:
        parser.error("--slow must be longer than --timeout, or slow answers are no fault")
    return args


def soak(args: argparse.Namespace, folder: Path) -> Outcome:
    share = args.fault_rate / len(FAULT_KINDS)
    faults = Faults(
        rate_429=share,
        rate_5xx=share,
        rate_drop=share,
        rate_timeout=share,
        retry_after_s=args.retry_after,
        timeout_sleep_s=args.slow,
        seed=args.seed,
    )
    world = World(seed=args.seed, invoices=args.invoices)
    outage_days = spread(args.outage_days, args.days)
    log = ConnectorLog()
    connector = logging.getLogger("pipelines")
    connector.addHandler(log)
    connector.propagate = False  # thousands of retry warnings: counted here, not printed
    outcome = Outcome()
    started = time.monotonic()
    database = folder / "soak.duckdb"
    pipeline = make_pipeline(
        "soak", destination=duckdb_destination(str(database)), pipelines_dir=str(folder / "dlt")
    )
    print(
        f"{'day':>4}{'runs':>6}{'calls':>8}{'faults':>8}{'retries':>9}{'deferred':>10}{'differ':>8}{'s':>7}"
    )
    try:
        with EmulatorServer(world, faults=faults) as server:
            for day in range(args.days + 1):
                day_started = time.monotonic()
                calls_before = server.call_count()
                faults_before = sum(server.faults_served.values())
                retries_before = sum(log.retries.values())
                if day:
                    server.advance_day()
                if day in outage_days:
                    server.inject("503", times=args.max_attempts, api="accelerate")
                runs = run_day(pipeline, server, log, outcome, args.max_runs)
                differences = compare(database, world, excused=log.failed_ids)
                outcome.days = day
                outcome.qvalia_ids_deferred += len(log.failed_ids)
                record(outcome, differences)
                print(
                    f"{day:>4}{runs:>6}{server.call_count() - calls_before:>8}"
                    f"{sum(server.faults_served.values()) - faults_before:>8}"
                    f"{sum(log.retries.values()) - retries_before:>9}{len(log.failed_ids):>10}"
                    f"{differences.total:>8}{time.monotonic() - day_started:>7.1f}",
                    flush=True,
                )
            server.reset_faults()
            run_day(pipeline, server, log, outcome, args.max_runs)
            settled = compare(database, world, excused=set())
            record(outcome, settled)
            outcome.calls = {api: server.call_count(api=api) for api in ("accelerate", "qvalia")}
            outcome.faults = faults_by_kind(server.faults_served)
    finally:
        connector.removeHandler(log)
        connector.propagate = True
    outcome.retries = dict(log.retries)
    outcome.rows = table_sizes(database)
    outcome.reruns = outcome.runs - (outcome.days + 2)  # one run per day, day 0 and the settling run too
    outcome.seconds = time.monotonic() - started
    return outcome


def spread(count: int, days: int) -> set[int]:
    """`count` days spread evenly over days 1..days."""
    count = min(max(count, 0), days)
    return {round((i + 1) * days / (count + 1)) or 1 for i in range(count)}


def run_day(pipeline: Any, server: EmulatorServer, log: ConnectorLog, outcome: Outcome, max_runs: int) -> int:
    """Run the job until one run completes (a completed run may still defer a few Qvalia ids)."""
    for attempt in range(1, max_runs + 1):
        log.failed_ids.clear()
        outcome.runs += 1
        try:
            run_job(pipeline, accelerate=accelerate(server), qvalia=qvalia(server))
            return attempt
        except PipelineError as error:
            outcome.gave_up.append(str(error))
        except Exception as error:
            outcome.unexpected_errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    raise SystemExit(f"soak: no run completed in {max_runs} tries on one day: {outcome.gave_up[-1]}")


def accelerate(server: EmulatorServer) -> Any:
    return accelerate_source(api_key=server.accelerate_api_key, base_url=server.accelerate_base_url)


def qvalia(server: EmulatorServer) -> Any:
    return qvalia_source(
        api_key=server.qvalia_api_key, account_reg_no=server.account_reg_no, base_url=server.qvalia_base_url
    )


def record(outcome: Outcome, differences: Differences) -> None:
    for kind in ("lost", "duplicates", "wrong", "extra"):
        setattr(outcome, kind, getattr(outcome, kind) + getattr(differences, kind))
    if differences.total:
        outcome.days_with_differences += 1
        outcome.examples.extend(differences.examples[: 5 - len(outcome.examples)])


def faults_by_kind(served: Counter[str]) -> dict[str, int]:
    kinds = {"429": served["429"], "5xx": sum(served[k] for k in served if k.startswith("5"))}
    return kinds | {"drop": served["drop"], "timeout": served["timeout"]}


# ---- the comparison with the world -------------------------------------------------------------------


def compare(database: Path, world: World, excused: set[str]) -> Differences:
    """Invoices, lines and statuses against the world; `excused` are Qvalia ids the last run gave up on."""
    differences = Differences()
    expected_invoices, expected_lines = expected_tables(world)
    compare_table(differences, "invoice", rows(database, "invoice"), ("invoice_id",), expected_invoices)
    compare_table(
        differences,
        "invoice_line",
        rows(database, "invoice_line"),
        ("invoice_id", "line_position"),
        expected_lines,
    )
    expected_statuses = {
        (integration_id,): status
        for integration_id, status in expected_status_rows(world).items()
        if integration_id not in excused
    }
    statuses = [row for row in rows(database, "invoice_status") if row["integration_id"] not in excused]
    compare_table(
        differences, "invoice_status", statuses, ("integration_id",), expected_statuses, subset=True
    )
    history = Counter(
        (row["integration_id"], row["fingerprint"]) for row in rows(database, "invoice_status_history")
    )
    repeated = sum(count - 1 for count in history.values())
    differences.add("duplicates", repeated, "invoice_status_history rows repeated for one status")
    unrecorded = [
        row["integration_id"]
        for row in statuses
        if (row["integration_id"], row["fingerprint"]) not in history
    ]
    differences.add("lost", len(unrecorded), f"invoice_status_history misses the status of {unrecorded[:3]}")
    return differences


def compare_table(
    differences: Differences,
    table: str,
    actual_rows: list[dict[str, Any]],
    key: tuple[str, ...],
    expected: dict[tuple[Any, ...], dict[str, Any]],
    subset: bool = False,
) -> None:
    """Each expected row exactly once with exactly its values, and nothing else. With `subset`, only the
    expected columns are compared (the status table adds checked_at and fingerprint of its own)."""
    actual: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in actual_rows:
        actual[tuple(row[name] for name in key)] = row
    differences.add("duplicates", len(actual_rows) - len(actual), f"{table} holds a key twice")
    lost = [k for k in expected if k not in actual]
    differences.add("lost", len(lost), f"{table} misses {lost[:3]}")
    extra = [k for k in actual if k not in expected]
    differences.add("extra", len(extra), f"{table} holds {extra[:3]}, which the world does not")
    wrong = []
    for k, want in expected.items():
        if k in actual:
            have = actual[k]
            if subset:
                have = {name: have.get(name) for name in want}
            if without_nulls(have) != without_nulls(want):
                wrong.append(k)
    differences.add("wrong", len(wrong), f"{table} has other values for {wrong[:3]}")


def rows(database: Path, table: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'billing'"
        ).fetchall()
        if (table,) not in tables:
            return []
        relation = connection.sql(f"SELECT * FROM billing.{table}")
        names = relation.columns
        return [
            {k: v for k, v in zip(names, row, strict=True) if not k.startswith("_")}
            for row in relation.fetchall()
        ]


def table_sizes(database: Path) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'billing' "
            "AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\' ORDER BY 1"
        ).fetchall()
        return {
            name: connection.execute(f"SELECT count(*) FROM billing.{name}").fetchone()[0]  # type: ignore[index]
            for (name,) in tables
        }


def expected_tables(
    world: World,
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], dict[tuple[Any, ...], dict[str, Any]]]:
    invoices: dict[tuple[Any, ...], dict[str, Any]] = {}
    lines: dict[tuple[Any, ...], dict[str, Any]] = {}
    for invoice in world.invoices.values():
        invoice_id = invoice["invoice_id"]
        invoices[(invoice_id,)] = {k: loaded(k, v) for k, v in invoice.items() if k != "invoice_lines"}
        for position, line in enumerate(invoice.get("invoice_lines") or [], start=1):
            lines[(invoice_id, position)] = {
                "invoice_id": invoice_id,
                "line_position": position,
                **{k: loaded(k, v) for k, v in line.items()},
            }
    return invoices, lines


def expected_status_rows(world: World) -> dict[str, dict[str, Any]]:
    """The status of every sales invoice Qvalia knows, with its timestamps in UTC as they are stored."""
    expected = {}
    for invoice_id, invoice in world.invoices.items():
        status = world.qvalia_status(str(invoice_id)) if invoice["invoice_type"] == "Sales" else None
        if status is not None:
            for name in STATUS_TIMESTAMPS:
                if status.get(name) is not None:
                    status[name] = dt.datetime.fromisoformat(status[name]).astimezone(dt.UTC)
            expected[str(invoice_id)] = status
    return expected


def loaded(name: str, value: Any) -> Any:
    """An API value as the destination must hold it."""
    if value is None:
        return None
    if name in TIMESTAMP_FIELDS:
        naive = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return naive.replace(tzinfo=LONDON).astimezone(dt.UTC)
    if name in DATE_FIELDS:
        return dt.date.fromisoformat(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def without_nulls(row: dict[str, Any]) -> dict[str, Any]:
    """A column the API never sent a value for does not exist yet: a null is the same as absent."""
    return {k: v for k, v in row.items() if v is not None}


# ---- the report --------------------------------------------------------------------------------------


def print_outcome(outcome: Outcome) -> None:
    faults = outcome.faults
    rows = [
        ("business days", f"{outcome.days} (and the first load)"),
        ("runs", f"{outcome.runs} (one a day, one settling run with faults off, {outcome.reruns} reruns)"),
        ("runs that gave up", f"{len(outcome.gave_up)}"),
        ("calls", ", ".join(f"{api} {count:,}" for api, count in outcome.calls.items())),
        (
            "faults injected",
            f"{sum(faults.values()):,}: "
            + ", ".join(f"{kind} {faults.get(kind, 0):,}" for kind in FAULT_KINDS),
        ),
        ("retries", ", ".join(f"{api} {outcome.retries.get(api, 0):,}" for api in ("accelerate", "qvalia"))),
        (
            "qvalia ids deferred",
            f"{outcome.qvalia_ids_deferred} (all attempts failed; polled again next run)",
        ),
        ("faults unaccounted", f"{outcome.faults_unaccounted} (faults - retries - calls given up)"),
        ("rows at the end", ", ".join(f"{table} {count:,}" for table, count in outcome.rows.items())),
        ("rows lost", f"{outcome.lost}"),
        ("duplicates", f"{outcome.duplicates}"),
        ("rows wrong / left over", f"{outcome.wrong} / {outcome.extra}"),
        ("unexpected errors", f"{len(outcome.unexpected_errors)}"),
        ("wall time", f"{outcome.seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for reason in sorted(set(outcome.gave_up)):
        print(f"gave up: {reason}")
    for line in outcome.examples + outcome.unexpected_errors:
        print(f"FOUND {line}")
    print("OK: nothing lost, duplicated or wrong" if outcome.ok else "FAILED")


if __name__ == "__main__":
    sys.exit(main())
