"""DuckDB's memory cap for the job's own DuckDB file: on while a backfill appends, off for every other load.

DuckDB's default is 80% of RAM. Capped, it spills to disk instead. A backfill into empty tables appends
its rows (accelerate/first_load.py) and streams, and 64MB keeps its peak under 300 MB at 1M invoices
(bench/backfill.py; at 160MB it was 316 MB). threads=1 and preserve_insertion_order=false changed nothing
measurable.

A merge runs with DuckDB's default. Capped at 64MB, the first run after a backfill of 1,000,000 invoices
(45,000 invoices and 215,000 lines staged, a new column) failed its line merge with "Out of Memory",
and dlt's retries of it then failed with "Conflict on tuple deletion" on the same connection: a scheduled
run that failed until the next one lifted the cap to finish the package (stop 22, `bench/incremental.py
--invoices 1000000 --change-share 0.01`). Without the cap the same benchmark's 1% days took 1.00 and 1.11 s
against a 42 s backfill. What a merge needs follows what it loads; its peak RSS is not measured. A load
that must de-duplicate (an invoice came twice in the answer) sorts whole rows in a window and runs
uncapped too, as do packages an interrupted run left, Qvalia's merges and create-from-order. The cap
applies only to credentials made here (for the default file or a path the user configured), never to
DuckDB credentials the user configured with settings of their own.
"""

from __future__ import annotations

from typing import Any

from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

MEMORY_LIMIT = "64MB"
# DuckDB's own default, named: a value (not a missing key) is applied to every connection dlt opens.
UNCAPPED = "80%"
_CAP_MARK = "_invoice_pipelines_memory_cap"


def capped_credentials(path: str) -> DuckDbCredentials:
    credentials = DuckDbCredentials(path)
    credentials.global_config = {"memory_limit": MEMORY_LIMIT}
    setattr(credentials, _CAP_MARK, MEMORY_LIMIT)
    return credentials


def own_credentials(destination: Any) -> DuckDbCredentials | None:
    """The credentials `capped_credentials` made for this destination; None for anything else, such as
    DuckDB credentials the user configured with settings of their own."""
    credentials = getattr(destination, "config_params", {}).get("credentials")
    return credentials if getattr(credentials, _CAP_MARK, None) is not None else None


def cap_load_memory(destination: Any, capped: bool) -> None:
    """Put the cap on (`capped`: a load that appends), or lift it for one that merges. Applied (`SET
    GLOBAL`) when dlt next borrows a DuckDB connection for a step, which it does for the load. Credentials
    the user configured are left alone."""
    credentials = own_credentials(destination)
    if credentials is not None:
        credentials.global_config["memory_limit"] = getattr(credentials, _CAP_MARK) if capped else UNCAPPED
