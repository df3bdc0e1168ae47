"""A backfill into tables that hold nothing yet appends its rows instead of merging them.

A merge copies every row into dlt's staging dataset, deletes the stored versions it replaces and inserts
the rows again: on a backfill there is nothing to replace, so half of the load's work is for nothing
(bench/backfill.py at 100,000 invoices: the load step 1.85 -> 1.05 s). Appending is used where the job's
own DuckDB copy job does it (`copies_rerun_exactly` on the destination: duckdb_rerun.py), which deletes the
stored rows of the keys it loads first and leaves line tombstones out: so a job dlt runs twice after a
kill, or a package finished after another pipeline loaded the same dataset, still ends as a merge would.
It is chosen when the destination holds neither table, or holds them empty, or the load drops them
first (a full refresh), and only while no invoice has come twice in the run: the first
repeat turns the whole load back into a de-duplicating merge (see repeated_ids.py). Later runs that load
rows merge.

The tables' emptiness is asked of the destination, not taken from dlt's state or schema alone: a second
pipeline loading into the same dataset has neither, and its first run must merge with what is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import dlt
from dlt.common.schema import Schema
from dlt.common.schema.utils import has_table_seen_data

from pipelines.accelerate.repeated_ids import may_skip_deduplication
from pipelines.destination_query import query_rows

logger = logging.getLogger(__name__)

TABLES = ("invoice", "invoice_line")
_ANY_ROW = "SELECT 1 FROM {table} LIMIT 1"


def appends(pipeline: dlt.Pipeline, extracting: Schema, package_state: Mapping[str, Any]) -> bool:
    """Whether this load may append: both tables are dropped by the load itself (a full refresh), or the
    destination holds no row in either. Any doubt (a table dlt has loaded before, a query that fails)
    answers no: a merge is always exact, only slower."""
    if not may_skip_deduplication(pipeline.destination):  # the copy jobs that append exactly are DuckDB's
        return False
    if set(TABLES) <= _tables_dropped_by_the_load(package_state):
        return True
    if any(has_table_seen_data(extracting.tables.get(name, {})) for name in TABLES):
        return False
    try:
        return all(not query_rows(pipeline, name, _ANY_ROW) for name in TABLES)
    except Exception as error:
        logger.warning(
            "accelerate: could not tell whether the destination holds invoices yet (%s); merging",
            type(error).__name__,
        )
        return False


def _tables_dropped_by_the_load(package_state: Mapping[str, Any]) -> set[str]:
    """The tables dlt drops before it loads this package (`refresh="drop_sources"`, the job's full
    refresh). A truncate (`drop_data`, which the job never asks for) is not counted: its tables are
    loaded ones in the schema, so the load merges."""
    tables: Iterable[Any] = package_state.get("dropped_tables", [])
    return {table.get("name") for table in tables if isinstance(table, Mapping)}
