"""Reading back what earlier runs loaded, with one call whatever the destination.

Both sources decide what to do from what the destination already holds (which invoice versions are
stored, which invoices are open, which orders were handled). On SQL destinations that is plain SQL with
`%s` parameters, which every dlt SQL client takes; Delta tables (the filesystem destination) are read with
`deltalake` and the same SQL runs in an in-memory DuckDB. A table that does not exist yet reads as None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dlt
import duckdb
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


def _run(
    pipeline: dlt.Pipeline, table: str, sql: str, params: tuple, columns: dict[str, str]
) -> list[tuple] | None:
    if writes_delta_tables(pipeline):
        return _run_on_delta_table(pipeline, table, sql, params, columns)
    try:
        with pipeline.sql_client() as client:
            names = {key: client.escape_column_name(name) for key, name in columns.items()}
            names["table"] = client.make_qualified_table_name(table)
            if "{loads}" in sql:
                names["loads"] = client.make_qualified_table_name(pipeline.default_schema.loads_table_name)
            with client.execute_query(sql.format(**names), *params) as cursor:
                return [tuple(row) for row in cursor.fetchall()]
    except DatabaseUndefinedRelation:
        return None


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
