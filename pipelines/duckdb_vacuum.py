"""DuckDB compacts the job's tables only once deleted rows are a large share of one, not at every run.

Why: a merge deletes the stored versions of the changed invoices, scattered over every row group of both
tables, and appends their new versions. At the end of each run DuckDB's checkpoint vacuums: as soon as the
rows left in a few consecutive row groups fit in one fewer, it rewrites them (up to four into three), so
each deleted row costs up to three surviving rows rewritten, at every run. On a run after a day that
changed a tenth of 100,000 invoices, that checkpoint took 0.12 to 0.32 s (0.07 s without vacuuming) where
the merge itself took 0.08 s: the biggest share of what a changed row cost beyond a backfill's row
(bench/incremental.py). With vacuuming held back until the deleted rows are `DEAD_SHARE` of a table, the
one run that compacts rewrites about one surviving row per deleted row, and the runs between write only
what changed. The price: the file holds up to that share of deleted rows, which scans skip but read.

Row groups whose rows are all deleted (dlt's staging tables, emptied at every load) are dropped by every
checkpoint, vacuuming or not.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

# A table is compacted at the next run's checkpoint once this share of its rows is deleted (DuckDB's own
# rule would compact at every run; 0.5 keeps the file at most about twice its live rows).
DEAD_SHARE = 0.5
# Smaller tables are left to DuckDB's own rule: their checkpoints cost little, whatever it rewrites.
MIN_ROWS = 122_880  # one DuckDB row group
_SETTING = "max_vacuum_tasks"
_DUCKDB_DEFAULT_TASKS = 100


def vacuum_only_when_due(connection: Any) -> None:
    """Hold back the checkpoint's vacuuming on this connection, unless a table is due for compacting."""
    due = tables_due(connection)
    if due:
        logger.info(
            "DuckDB compacts %s at the end of this run (deleted rows pile up between)", ", ".join(due)
        )
        _set_tasks(connection, _DUCKDB_DEFAULT_TASKS)
    else:
        _set_tasks(connection, 0)


def tables_due(connection: Any) -> list[str]:
    """The tables of the file whose deleted rows are at least `DEAD_SHARE` of their stored rows."""
    tables = connection.execute(
        "SELECT schema_name, table_name, estimated_size FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT temporary AND estimated_size >= ?",
        [MIN_ROWS],
    ).fetchall()
    due = []
    for schema, table, stored in tables:
        live = connection.execute(f"SELECT count(*) FROM {_quoted(schema)}.{_quoted(table)}").fetchone()[0]
        if stored - live >= DEAD_SHARE * stored:
            due.append(f"{schema}.{table}")
    return due


def _set_tasks(connection: Any, tasks: int) -> None:
    import duckdb

    try:
        connection.execute(f"SET {_SETTING} = {int(tasks)}")
    except duckdb.Error:  # a DuckDB without the setting keeps its own rule
        logger.debug("DuckDB has no %s setting: it vacuums by its own rule", _SETTING)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
