"""Reading back what earlier runs loaded, with one call whatever the destination.

Both sources decide what to do from what the destination already holds (which invoice versions are
stored, which invoices are open, which orders were handled). On SQL destinations that is plain SQL with
`%s` parameters, which every dlt SQL client takes; Delta tables (the filesystem destination) are read with
`deltalake` and the same SQL runs in an in-memory DuckDB. A table that does not exist yet reads as None.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import dlt
import duckdb
import pyarrow as pa
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from pipelines.delta_tables import read_delta_table, writes_delta_tables


def query_rows(
    pipeline: dlt.Pipeline,
    table: str,
    sql: str,
    *params: Any,
    columns: Mapping[str, str] | None = None,
) -> list[tuple] | None:
    """`sql` with `{table}`, `{loads}` (dlt's record of completed loads) and each of `columns`' placeholders
    filled in with quoted names, as tuples; None when the table is not there."""
    return _run(pipeline, table, sql, params, dict(columns or {}))


def query_columns(
    pipeline: dlt.Pipeline,
    table: str,
    sql: str,
    *params: Any,
    columns: Mapping[str, str] | None = None,
) -> pa.Table | list[tuple] | None:
    """The same query, as an arrow table where the destination hands one over natively (DuckDB: no Python
    object per value, ~10x faster for a few thousand rows with timestamps), else as tuples."""
    return _run(pipeline, table, sql, params, dict(columns or {}), native_arrow=True)


def _run(
    pipeline: dlt.Pipeline,
    table: str,
    sql: str,
    params: tuple,
    columns: dict[str, str],
    native_arrow: bool = False,
) -> pa.Table | list[tuple] | None:
    if writes_delta_tables(pipeline):
        return _run_on_delta_table(pipeline, table, sql, params, columns)
    try:
        with pipeline.sql_client() as client:
            names = {key: client.escape_column_name(name) for key, name in columns.items()}
            names["table"] = client.make_qualified_table_name(table)
            if "{loads}" in sql:
                names["loads"] = client.make_qualified_table_name(pipeline.default_schema.loads_table_name)
            with client.execute_query(sql.format(**names), *params) as cursor:
                native = getattr(cursor, "native_cursor", None)
                if native_arrow and isinstance(native, duckdb.DuckDBPyConnection):
                    return _duckdb_arrow(native)
                return [tuple(row) for row in cursor.fetchall()]
    except DatabaseUndefinedRelation:
        return None


def _duckdb_arrow(cursor: duckdb.DuckDBPyConnection) -> pa.Table:
    """DuckDB's result as arrow. DuckDB 2 renamed `fetch_arrow_table` and warns that a DB-API result
    (which dlt's client gives) is copied once more on the way: true, and a few MB at most here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
        fetch = getattr(cursor, "to_arrow_table", None) or cursor.fetch_arrow_table
        return fetch()


def _run_on_delta_table(
    pipeline: dlt.Pipeline, table: str, sql: str, params: tuple, columns: dict[str, str]
) -> list[tuple] | None:
    rows = read_delta_table(pipeline, table)
    if rows is None:
        return None
    with duckdb.connect() as connection:
        connection.register("stored", rows)
        names = {key: '"' + name.replace('"', '""') + '"' for key, name in columns.items()}
        cursor = connection.execute(sql.format(table="stored", **names).replace("%s", "?"), params)
        return [tuple(row) for row in cursor.fetchall()]
