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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# A table is compacted at the run's checkpoint once this share of its rows is deleted (DuckDB's own rule
# would compact at every run; 0.5 keeps the file at most about twice its live rows).
DEAD_SHARE = 0.5
# Tables smaller than one DuckDB row group never make a run compact: their deleted rows cost little.
MIN_ROWS = 122_880
_SETTING = "max_vacuum_tasks"


@contextmanager
def vacuum_only_when_due(connection: Any) -> Iterator[None]:
    """During the block, and in the checkpoint that ends it, DuckDB vacuums only if a table is due. The
    setting belongs to the whole DuckDB instance (another connection to the file in this process shares
    it), so it is put back as it was afterwards, once the run's checkpoint has been written without it."""
    previous = _current_tasks(connection)
    if previous is None:  # a DuckDB without the setting keeps its own rule
        yield
        return
    due = tables_due(connection)
    if due:
        logger.info(
            "DuckDB compacts %s at the end of this run (deleted rows pile up between)", ", ".join(due)
        )
        yield
        return
    connection.execute(f"SET {_SETTING} = 0")
    try:
        yield
        _checkpoint(connection)
    finally:
        connection.execute(f"SET {_SETTING} = {previous}")


def _checkpoint(connection: Any) -> None:
    """What the run wrote, written without vacuuming, so the close finds nothing left to do. Another
    connection's open transaction may refuse it; then the close (or that connection) checkpoints later."""
    import duckdb

    try:
        connection.execute("CHECKPOINT")
    except duckdb.Error as error:
        logger.debug("DuckDB did not checkpoint at the end of the run: %s", error)


def tables_due(connection: Any) -> list[str]:
    """The tables of the file whose deleted rows are at least `DEAD_SHARE` of their stored rows."""
    import duckdb

    tables = connection.execute(
        "SELECT database_name, schema_name, table_name, estimated_size FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT temporary AND estimated_size >= ?",
        [MIN_ROWS],
    ).fetchall()
    due = []
    for database, schema, table, stored in tables:
        name = qualified_name(database, schema, table)
        try:
            live = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        except duckdb.Error as error:  # a table the run cannot read is not the run's to compact
            logger.debug("could not count the rows of %s: %s", name, error)
            continue
        if stored - live >= DEAD_SHARE * stored:
            due.append(f"{schema}.{table}")
    return due


def _current_tasks(connection: Any) -> int | None:
    import duckdb

    try:
        return int(connection.execute(f"SELECT current_setting('{_SETTING}')").fetchone()[0])
    except duckdb.Error:
        return None


def qualified_name(*parts: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)
