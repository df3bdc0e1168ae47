"""Reading back what the job wrote to dlt's filesystem destination, where every table is a Delta table.

Both sources read the destination before they extract (stored line positions, open invoices). On SQL
destinations that is a query; on the filesystem it would be DuckDB's `delta` extension, which DuckDB
downloads on first use and which a closed network (CI, many schedulers) cannot fetch. The `deltalake`
package that writes the tables reads them just as well, with nothing to download.
"""

from __future__ import annotations

from typing import Any

import dlt
import pyarrow as pa

TABLE_FORMAT = "delta"


def writes_delta_tables(pipeline: dlt.Pipeline) -> bool:
    """True when the pipeline loads into dlt's filesystem destination (local folder, S3, GCS, Azure...)."""
    destination = pipeline.destination
    return destination is not None and destination.destination_type.endswith(".filesystem")


def read_delta_table(pipeline: dlt.Pipeline, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """The table's current rows (only `columns` if given), or None when no load has written it yet."""
    schema_name = _schema_with(pipeline, table)
    if schema_name is None:
        return None
    with pipeline.destination_client(schema_name=schema_name) as client:
        if not client.is_open_table(TABLE_FORMAT, table):  # type: ignore[attr-defined]
            return None
        try:
            delta_table: Any = client.load_open_table(TABLE_FORMAT, table)  # type: ignore[attr-defined]
        except Exception as error:  # deltalake's TableNotFoundError, dlt's DestinationUndefinedEntity
            if _is_missing_table(error):
                return None
            raise
        dataset = delta_table.to_pyarrow_dataset()
        wanted = [name for name in columns if name in dataset.schema.names] if columns else None
        return dataset.to_table(columns=wanted)


def _schema_with(pipeline: dlt.Pipeline, table: str) -> str | None:
    for name, schema in pipeline.schemas.items():
        if table in schema.tables and schema.tables[table].get("columns"):
            return name
    return None


def _is_missing_table(error: Exception) -> bool:
    kind = type(error).__name__
    return kind in ("TableNotFoundError", "DestinationUndefinedEntity", "FileNotFoundError")
