"""Backfill benchmark: N invoices x 5 lines from the emulator into DuckDB, against DuckDB's own read_json.

    python bench/backfill.py                  # 100,000 invoices (the issue's figure)
    python bench/backfill.py --invoices 2000  # the quick version CI runs

The emulator runs in this process with its response pre-serialised; the connector and the reference each
run in a child process of their own, so each one's peak RSS is its own. Prints a table of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.emulator import EmulatorServer, World  # noqa: E402

REFERENCE_SQL = """
CREATE SCHEMA billing;
CREATE TEMP TABLE raw AS
  SELECT unnest(items) AS item FROM read_json('{body}', maximum_object_size = 2000000000);
CREATE TABLE billing.invoice AS SELECT * EXCLUDE (invoice_lines) FROM (SELECT unnest(item) FROM raw);
CREATE TABLE billing.invoice_line AS
  SELECT invoice_id, unnest(line)
  FROM (SELECT item.invoice_id AS invoice_id, unnest(item.invoice_lines) AS line FROM raw);
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--child", choices=["connector", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = run_connector(args) if args.child == "connector" else run_reference(args)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return
    run_benchmark(args.invoices, args.lines)


def peak_rss_mb() -> float:
    """This process's own high-water mark. VmHWM belongs to the address space made by exec; ru_maxrss would
    also count the parent's resident set at fork time (a Linux quirk), here the emulator's ~1 GB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_benchmark(invoices: int, lines: int) -> None:
    started = time.perf_counter()
    world = World(seed=42, invoices=invoices, lines_per_invoice=lines)
    build_seconds = time.perf_counter() - started
    with EmulatorServer(world) as server, tempfile.TemporaryDirectory(prefix="bench-backfill-") as folder:
        import requests

        started = time.perf_counter()
        body = requests.get(
            f"{server.accelerate_base_url}/invoices/since/2000-01-01/",
            headers={"api-key": server.accelerate_api_key},
            timeout=600,
        ).content
        warm_seconds = time.perf_counter() - started
        print(
            f"world: {invoices:,} invoices x {lines} lines built in {build_seconds:.1f} s; "
            f"body {len(body) / 1e6:.0f} MB, first serve {warm_seconds:.1f} s",
            flush=True,
        )
        del body
        common = ["--base-url", server.accelerate_base_url, "--api-key", server.accelerate_api_key]
        results = {}
        for child in ("reference", "connector"):
            child_folder = Path(folder) / child
            child_folder.mkdir()
            finished = subprocess.run(
                [sys.executable, __file__, "--child", child, "--folder", str(child_folder), *common],
                capture_output=True,
                text=True,
                cwd=child_folder,
                env={**os.environ, "DLT_DATA_DIR": str(child_folder / "dlt")},
            )
            if finished.returncode != 0:
                raise SystemExit(f"{child} failed:\n{finished.stderr[-3000:]}")
            results[child] = json.loads(finished.stdout.strip().splitlines()[-1])
    report(results, invoices, lines)


def run_connector(args: argparse.Namespace) -> dict[str, float]:

    from pipelines.accelerate import accelerate_source
    from pipelines.invoices import duckdb_destination, make_pipeline, run_job

    database = Path(args.folder) / "connector.duckdb"
    pipeline = make_pipeline("bench_backfill", destination=duckdb_destination(str(database)))
    started = time.perf_counter()
    summary = run_job(pipeline, accelerate=accelerate_source(api_key=args.api_key, base_url=args.base_url))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "invoices": summary.rows["invoice"], "lines": summary.rows["invoice_line"]}


def run_reference(args: argparse.Namespace) -> dict[str, float]:
    import duckdb
    import requests

    body_path = Path(args.folder) / "body.json"
    started = time.perf_counter()
    with requests.get(
        f"{args.base_url}/invoices/since/2000-01-01/",
        headers={"api-key": args.api_key},
        stream=True,
        timeout=600,
    ) as response:
        response.raise_for_status()
        with body_path.open("wb") as body:
            for chunk in response.iter_content(1 << 20):
                body.write(chunk)
    with duckdb.connect(str(Path(args.folder) / "reference.duckdb")) as connection:
        connection.execute(REFERENCE_SQL.format(body=body_path))
        invoices = connection.sql("SELECT count(*) FROM billing.invoice").fetchall()[0][0]
        lines = connection.sql("SELECT count(*) FROM billing.invoice_line").fetchall()[0][0]
    return {"seconds": time.perf_counter() - started, "invoices": invoices, "lines": lines}


def report(results: dict[str, dict[str, float]], invoices: int, lines: int) -> None:
    print(
        f"\nbackfill of {invoices:,} invoices x {lines} lines from the emulator into DuckDB ({os.cpu_count()} cores)"
    )
    print(f"{'path':<34}{'wall s':>9}{'invoices/s':>13}{'lines/s':>12}{'peak RSS MB':>13}")
    labels = {"connector": "invoice-pipelines (arrow path)", "reference": "DuckDB read_json (reference)"}
    for name in ("connector", "reference"):
        figures = results[name]
        print(
            f"{labels[name]:<34}{figures['seconds']:>9.2f}{figures['invoices'] / figures['seconds']:>13,.0f}"
            f"{figures['lines'] / figures['seconds']:>12,.0f}{figures['peak_rss_mb']:>13,.0f}"
        )
    ratio = results["connector"]["seconds"] / results["reference"]["seconds"]
    print(f"time ratio connector / read_json: {ratio:.2f} (goal <= 2.0 for issue 2, <= 1.0 for issue 5)")
    if results["connector"]["invoices"] != invoices or results["connector"]["lines"] != invoices * lines:
        raise SystemExit(
            f"connector loaded {results['connector']} rows, expected {invoices} / {invoices * lines}"
        )


if __name__ == "__main__":
    main()
