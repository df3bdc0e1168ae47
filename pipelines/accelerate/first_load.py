"""A backfill into tables that hold nothing yet appends its rows instead of merging them.

A merge copies every row into dlt's staging dataset, deletes the stored versions it replaces and inserts
the rows again: on a backfill there is nothing to replace, so half of the load's work (and, on a warehouse,
half of the rows written and scanned) is for nothing. Fivetran and Airbyte load a first sync the same way.
Appending is exact only while no stored row can clash with a loaded one, so it is used when the
destination holds neither table, or holds them empty, or the load drops or truncates them first (a full
refresh), and only while no invoice has come twice in the run: the first repeat turns the whole load back
into a de-duplicating merge (see repeated_ids.py). Every later run merges.

Decided from the destination itself, not from dlt's state or schema: a second pipeline loading into the
same dataset has neither, and its first run must still merge with what the first pipeline stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.schema import Schema
from dlt.common.schema.utils import has_table_seen_data

from pipelines.accelerate.schema import LINE_TOMBSTONE
from pipelines.destination_query import query_rows

logger = logging.getLogger(__name__)

TABLES = ("invoice", "invoice_line")
_ANY_ROW = "SELECT 1 FROM {table} LIMIT 1"


def appends(pipeline: dlt.Pipeline, extracting: Schema, package_state: Mapping[str, Any]) -> bool:
    """Whether this load may append: both tables are emptied by the load itself (a full refresh), or the
    destination holds no row in either. Any doubt (a table dlt has loaded before, a query that fails)
    answers no: a merge is always exact, only slower."""
    if set(TABLES) <= _tables_emptied_by_the_load(package_state):
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


def _tables_emptied_by_the_load(package_state: Mapping[str, Any]) -> set[str]:
    """The tables dlt drops or truncates before it loads this package (`refresh`)."""
    tables: Iterable[Any] = [
        *package_state.get("dropped_tables", []),
        *package_state.get("truncated_tables", []),
    ]
    return {table.get("name") for table in tables if isinstance(table, Mapping)}


def without_tombstones(lines: pa.Table) -> pa.Table:
    """The lines less the tombstones of invoices that have none: a merge reads a tombstone as "delete this
    invoice's stored lines", an append would store it as a line."""
    if LINE_TOMBSTONE not in lines.column_names or lines.num_rows == 0:
        return lines
    marks = lines[LINE_TOMBSTONE]
    # true where marked true, false where null: `fill_null(False)` would build a scalar from a Python value,
    # which imports pandas where it is installed (see arrow_arrays.py)
    removed = pc.and_kleene(marks, pc.is_valid(marks))
    if not pc.any(removed).as_py():
        return lines
    return lines.filter(pc.invert(removed))
