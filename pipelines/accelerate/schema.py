"""Column types of the `invoice` and `invoice_line` tables: the known ones, and how a new field is typed.

Known fields get fixed types (ids BIGINT, money DECIMAL(38,9), dates DATE, timestamps TIMESTAMPTZ). A field
the API starts sending later is typed from its name (`*_amount` is money, `*_date` a date...) or else from
its first value, and that decision is kept in the resource state so the column's type never flips.
DECIMAL(38,9) is BigQuery's NUMERIC and Snowflake's NUMBER(38,9): exact, and native everywhere.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from enum import StrEnum
from typing import Any

import pyarrow as pa
from dlt.common.schema.typing import TColumnSchema


class ColumnType(StrEnum):
    TEXT = "text"
    BIGINT = "bigint"
    DECIMAL = "decimal"
    DATE = "date"
    TIMESTAMP = "timestamp"
    BOOL = "bool"
    JSON = "json"


DECIMAL_PRECISION = 38
DECIMAL_SCALE = 9

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.TEXT: pa.string(),
    ColumnType.BIGINT: pa.int64(),
    ColumnType.DECIMAL: pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
    ColumnType.DATE: pa.date32(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.JSON: pa.string(),
}

_T = ColumnType
INVOICE_FIELDS: dict[str, ColumnType] = {
    # the seed's example response, in its order
    "invoice_id": _T.BIGINT,
    "invoice_type": _T.TEXT,
    "credit_invoice_id": _T.BIGINT,
    "external_reference": _T.TEXT,
    "contract_id": _T.BIGINT,
    "asset_id": _T.BIGINT,
    "payer_display_name": _T.TEXT,
    "payer_property": _T.TEXT,
    "payer_street": _T.TEXT,
    "payer_locality": _T.TEXT,
    "payer_town_city": _T.TEXT,
    "payer_postcode": _T.TEXT,
    "tax_date": _T.DATE,
    "due_date": _T.DATE,
    "sent_date": _T.DATE,
    "sent_by": _T.TEXT,
    "paid_date": _T.DATE,
    "paid_by": _T.TEXT,
    "void_date": _T.DATE,
    "void_by": _T.TEXT,
    "paid_amount": _T.DECIMAL,
    "payable_sort_code": _T.TEXT,
    "payable_account_number": _T.TEXT,
    "creation_date": _T.TIMESTAMP,
    "created_by": _T.TEXT,
    "last_update_date": _T.TIMESTAMP,
    "last_updated_by": _T.TEXT,
    # the seed's attribute list
    "net_amount": _T.DECIMAL,
    "quote_id": _T.BIGINT,
    "type": _T.TEXT,
    "invoice_date": _T.DATE,
    "invoiced_by": _T.TEXT,
    "description": _T.TEXT,
    "reference": _T.TEXT,
    "payment_reference": _T.TEXT,
    "vat_rate": _T.DECIMAL,
    "ipt_rate": _T.DECIMAL,
}

# The seed does not describe a line, so only the columns we add and the obvious money fields are fixed.
LINE_FIELDS: dict[str, ColumnType] = {
    "invoice_id": _T.BIGINT,
    "line_position": _T.BIGINT,
    "quantity": _T.DECIMAL,
    "unit_price": _T.DECIMAL,
}
# Marks an invoice whose lines are all gone, so the merge deletes its old lines; never stored as true.
LINE_TOMBSTONE = "_lines_removed"
LINES_FIELD = "invoice_lines"

_MONEY = re.compile(r"(amount|price|total|rate|cost|balance|fee|tax|vat|ipt)$")
_TIMESTAMP_NAME = re.compile(r"(_at|_time|_timestamp|_datetime)$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def infer_column_type(name: str, value: Any) -> ColumnType:
    """Type a field we have not seen before from its name first, its first non-null value second."""
    if isinstance(value, dict | list):
        return ColumnType.JSON
    if isinstance(value, bool):
        return ColumnType.BOOL
    if name.endswith("_id") and isinstance(value, int):
        return ColumnType.BIGINT
    if _MONEY.search(name) and isinstance(value, int | decimal.Decimal | str) and _is_number(value):
        return ColumnType.DECIMAL
    if name.endswith("_date") and isinstance(value, str):
        return ColumnType.DATE if _DATE_ONLY.match(value.strip()) else ColumnType.TIMESTAMP
    if _TIMESTAMP_NAME.search(name) and isinstance(value, str) and _is_datetime(value):
        return ColumnType.TIMESTAMP
    if isinstance(value, int):
        return ColumnType.BIGINT
    if isinstance(value, decimal.Decimal | float):
        return ColumnType.DECIMAL
    return ColumnType.TEXT


def _is_number(value: Any) -> bool:
    try:
        decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def dlt_column(name: str, column_type: ColumnType, nullable: bool = True) -> TColumnSchema:
    """The dlt hint that agrees with the arrow type we produce, so dlt never warns of a mismatch."""
    column: TColumnSchema = {"name": name, "nullable": nullable}
    if column_type is ColumnType.DECIMAL:
        column.update(data_type="decimal", precision=DECIMAL_PRECISION, scale=DECIMAL_SCALE)
    elif column_type is ColumnType.TIMESTAMP:
        column.update(data_type="timestamp", timezone=True, precision=6)
    elif column_type is ColumnType.JSON:
        column.update(data_type="text")
    else:
        column.update(data_type=column_type.value)
    return column


def invoice_columns() -> dict[str, TColumnSchema]:
    columns = {name: dlt_column(name, kind) for name, kind in INVOICE_FIELDS.items()}
    columns["invoice_id"] = dlt_column("invoice_id", ColumnType.BIGINT, nullable=False)
    columns["last_update_date"]["dedup_sort"] = "desc"
    return columns


def line_columns() -> dict[str, TColumnSchema]:
    columns = {name: dlt_column(name, kind) for name, kind in LINE_FIELDS.items()}
    for key in ("invoice_id", "line_position"):
        columns[key] = dlt_column(key, ColumnType.BIGINT, nullable=False)
    columns[LINE_TOMBSTONE] = {
        "name": LINE_TOMBSTONE,
        "data_type": "bool",
        "nullable": True,
        "hard_delete": True,
    }
    return columns
