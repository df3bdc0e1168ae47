"""The `invoice-pipelines` command line: run, demo and emulator (CONTRACT.md names them).

Every expected failure ends as one line on stderr and a non-zero exit status; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from pipelines.errors import PipelineError
from pipelines.short_process import collect_then_freeze, imports_without_collection

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invoice-pipelines",
        description="Load Accelerate invoices (and Qvalia e-invoice statuses) with dlt.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and retries in detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the main job: pipeline 'invoices' (default: invoices.duckdb)")
    run.add_argument("--destination", default="duckdb", help="a dlt destination name (default: duckdb)")
    run.add_argument("--dataset", default="billing", help="dataset (schema) name (default: billing)")
    run.add_argument("--only", choices=["accelerate", "qvalia"], help="run one source only")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop the tables and cursor of the sources run, reload all",
    )

    orders = commands.add_parser(
        "create-from-order", help="Qvalia Create from Order for each id, at most once per id"
    )
    orders.add_argument("ids", nargs="+", metavar="ID", help="incoming order ids (Qvalia integration ids)")
    orders.add_argument("--send-method", required=True, help="how Qvalia sends the invoice, e.g. peppol")
    orders.add_argument(
        "--destination", default="duckdb", help="where invoice_from_order lives (default: duckdb)"
    )
    orders.add_argument("--dataset", default="billing", help="dataset (schema) name (default: billing)")

    demo = commands.add_parser("demo", help="run the whole job against the bundled emulator (no network)")
    demo.add_argument("--days", type=int, default=2, help="business days to advance between runs (default 2)")
    demo.add_argument("--invoices", type=int, default=800, help="invoices in the demo world (default 800)")

    emulator = commands.add_parser("emulator", help="serve the bundled API emulator on loopback")
    emulator.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 = any)")
    emulator.add_argument("--invoices", type=int, default=800, help="invoices in the world (default 800)")
    emulator.add_argument("--seed", type=int, default=7, help="seed of the generated world (default 7)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line in the caller's process: the exit status, for tests and for code that embeds it."""
    return dispatch(build_parser().parse_args(argv))


def console_main() -> NoReturn:
    """`invoice-pipelines` and `python -m pipelines`: `main` in a process of its own, which imports with the
    cyclic collector off and leaves without walking every object once more (pipelines/short_process.py:
    a run with nothing changed, 1.19 -> 0.88 s)."""
    args = build_parser().parse_args()  # --help and usage errors leave here, before the heavy imports
    try:
        with imports_without_collection():
            import pipelines.invoices  # noqa: F401  dlt, pyarrow, numpy and DuckDB: every command needs them
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    status = dispatch(args)
    collect_then_freeze()
    raise SystemExit(status)


def dispatch(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "create-from-order":
            return _create_from_order(args)
        if args.command == "demo":
            from pipelines.demo import run_demo

            run_demo(days=args.days, invoices=args.invoices)
            return 0
        if args.command == "emulator":
            from pipelines.demo import serve_emulator

            serve_emulator(port=args.port, invoices=args.invoices, seed=args.seed)
            return 0
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from pipelines.invoices import PIPELINE_NAME, make_pipeline, run_job

    pipeline = make_pipeline(PIPELINE_NAME, destination=args.destination, dataset_name=args.dataset)
    summary = run_job(pipeline, only=args.only, full_refresh=args.full_refresh)
    for line in summary.lines():
        print(line)
    return 0


def _create_from_order(args: argparse.Namespace) -> int:
    import dlt

    from pipelines.invoices import PIPELINE_NAME, exclusive_run, friendly_errors, make_pipeline
    from pipelines.qvalia import make_client
    from pipelines.qvalia.orders import create_invoices_from_orders

    pipeline = make_pipeline(PIPELINE_NAME, destination=args.destination, dataset_name=args.dataset)
    with friendly_errors("sources.qvalia"):
        client = make_client(
            api_key=dlt.secrets["sources.qvalia.api_key"],
            account_reg_no=dlt.config.get("sources.qvalia.account_reg_no"),
            environment=dlt.config.get("sources.qvalia.environment"),
            base_url=dlt.config.get("sources.qvalia.base_url"),
        )
    try:
        with exclusive_run(pipeline):
            outcomes = create_invoices_from_orders(pipeline, client, args.ids, args.send_method)
    finally:
        client.close()
    for outcome in outcomes:
        print(outcome.line())
    failed = [outcome for outcome in outcomes if outcome.result == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(outcomes)} orders failed (see above)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("pipelines")
    ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    ours.propagate = False
