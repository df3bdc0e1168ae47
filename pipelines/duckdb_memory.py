"""DuckDB's memory cap for the job's own DuckDB file, and the one load that runs without it.

DuckDB's default is 80% of RAM. Capped, it spills to disk instead, so a scheduled job stays small. The
merge streams when the staged rows hold each key once (see accelerate/repeated_ids.py), and 64MB costs
little: bench/backfill.py at 100k invoices, load 2.4 s at 160MB against 2.9 s at 64MB, whose peak stays
under 300 MB at 1M invoices (160MB: 316 MB). threads=1 and preserve_insertion_order=false changed nothing
measurable. A load that must de-duplicate (an invoice came twice in the answer) sorts whole rows in a
window, which at 1M invoices runs out of memory at 64MB, so that load runs with DuckDB's default, as do
packages an interrupted run left (which may be such a load). The cap applies only to credentials made
here (for the default file or a path the user configured), never to DuckDB credentials the user configured
with settings of their own.
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


def cap_merge_memory(destination: Any, capped: bool) -> None:
    """Put the cap on (`capped`), or lift it for a load that de-duplicates. Applied (`SET GLOBAL`) when dlt
    next borrows a DuckDB connection for a step, which it does for the load. Credentials the user
    configured are left alone."""
    credentials = own_credentials(destination)
    if credentials is not None:
        credentials.global_config["memory_limit"] = getattr(credentials, _CAP_MARK) if capped else UNCAPPED
