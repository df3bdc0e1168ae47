"""What the Qvalia side reads back from the destination: which invoices are still open, what status each
had last time, and which orders were already invoiced. Plain SQL that every dlt SQL destination speaks;
a table that does not exist yet reads as empty (see `pipelines.destination_query`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dlt

from pipelines.destination_query import query_rows
from pipelines.errors import ConfigurationError
from pipelines.qvalia import settings


@dataclass
class KnownStatus:
    fingerprint: str | None
    final: bool


@dataclass
class OpenInvoices:
    """Integration ids to poll this run, and what the destination says of each one's last status."""

    to_poll: list[str] = field(default_factory=list)
    final_skipped: int = 0
    previous: dict[str, KnownStatus] = field(default_factory=dict)


def is_final(status: str | None, paid_at: Any, cancelled_at: Any) -> bool:
    return (
        paid_at is not None or cancelled_at is not None or (status or "").lower() in settings.FINAL_STATUSES
    )


def open_invoices(pipeline: dlt.Pipeline, id_field: str, include_final: bool) -> OpenInvoices:
    """Every Accelerate sales invoice's integration id, less those whose status is final (unless asked)."""
    invoice_columns = _columns(pipeline, "invoice")
    if invoice_columns is None:
        return OpenInvoices()
    if id_field not in invoice_columns:
        raise ConfigurationError(
            f"sources.qvalia.integration_id_field {id_field!r} is not a column of the invoice table "
            f"(columns include {', '.join(sorted(invoice_columns)[:8])}, ...)"
        )
    sales = query_rows(
        pipeline,
        "invoice",
        "SELECT {column} FROM {table} WHERE lower(invoice_type) = 'sales' AND {column} IS NOT NULL",
        columns={"column": id_field},
    )
    if sales is None:
        return OpenInvoices()
    previous = {
        str(row[0]): KnownStatus(fingerprint=row[4], final=is_final(row[1], row[2], row[3]))
        for row in query_rows(
            pipeline,
            "invoice_status",
            "SELECT integration_id, status, paid_at, cancelled_at, fingerprint FROM {table}",
        )
        or []
    }
    result = OpenInvoices(previous=previous)
    for (value,) in sales:
        integration_id = _as_id(value)
        known = previous.get(integration_id)
        if known is not None and known.final and not include_final:
            result.final_skipped += 1
        else:
            result.to_poll.append(integration_id)
    return result


def recorded_orders(pipeline: dlt.Pipeline) -> dict[str, str]:
    """integration_id -> state ('requested' or 'created') of every order this tool has handled."""
    rows = query_rows(pipeline, "invoice_from_order", "SELECT integration_id, state FROM {table}")
    return {str(integration_id): state for integration_id, state in rows or []}


def _as_id(value: Any) -> str:
    """Accelerate ids are integers; an integral decimal or float (some warehouses) must not become '1.0'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    if "." in text and text.replace(".", "", 1).isdigit() and set(text.split(".", 1)[1]) <= {"0"}:
        return text.split(".", 1)[0]
    return text


def _columns(pipeline: dlt.Pipeline, table: str) -> set[str] | None:
    """The table's columns as dlt's schemas know them (restored from the destination when the working
    folder is new), or None when no schema has the table yet."""
    for schema in pipeline.schemas.values():
        if table in schema.tables and schema.tables[table].get("columns"):
            return set(schema.tables[table]["columns"])
    return None
