"""Turn a batch of API invoice dicts into two arrow tables, `invoice` and `invoice_line`, typed exactly.

Columns are converted whole by arrow (fast, C speed); a column arrow cannot take as is (numbers sent as
strings, timestamps in another ISO form) falls back to converting value by value, and a value that cannot
be read faithfully stops the run with a line naming the field, rather than being dropped or rounded.
Accelerate's timestamps are naive local wall time: they are read in the configured zone and stored in UTC.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import operator
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.accelerate.schema import (
    ARROW_TYPES,
    INVOICE_FIELDS,
    LINE_FIELDS,
    LINE_TOMBSTONE,
    LINES_FIELD,
    ColumnType,
    infer_column_type,
)
from pipelines.errors import ApiResponseError

_NAIVE_FORMAT = "%Y-%m-%d %H:%M:%S"
_UTC = dt.UTC
_DECIMAL_QUANTUM = decimal.Decimal(1).scaleb(-9)


class BatchConverter:
    """Converts batches for one run; `field_types` (kept in dlt state) pins the type of every new field."""

    def __init__(self, timezone: str, field_types: MutableMapping[str, dict[str, str]]) -> None:
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._field_types = field_types

    @property
    def field_types(self) -> Mapping[str, Mapping[str, str]]:
        """The types decided so far, by table and field (kept in the resource state)."""
        return self._field_types

    def decide(self, table: str, name: str, value: Any) -> None:
        """Type a new field from its first value, as `convert` would have (for the fast reader)."""
        decided = self._field_types.setdefault(table, {})
        if value is not None and name not in decided:
            decided[name] = infer_column_type(name, value).value

    def convert(self, invoices: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
        line_rows: list[Mapping[str, Any]] = []
        line_invoice_ids: list[Any] = []
        line_positions: list[int] = []
        tombstones: list[Any] = []
        for invoice in invoices:
            lines = invoice.pop(LINES_FIELD, None)
            if lines is None:
                continue
            invoice_id = invoice.get("invoice_id")
            if not lines:
                tombstones.append(invoice_id)
                continue
            for position, line in enumerate(lines, start=1):
                line_rows.append(line if isinstance(line, dict) else {"value": line})
                line_invoice_ids.append(invoice_id)
                line_positions.append(position)
        invoice_table = self._table("invoice", invoices, INVOICE_FIELDS, {})
        if invoice_table["invoice_id"].null_count:
            raise ApiResponseError(
                "Accelerate sent an invoice without invoice_id, which is the key of every row; "
                "nothing was loaded from this run"
            )
        line_extra = {
            "invoice_id": line_invoice_ids + tombstones,
            "line_position": line_positions + [0] * len(tombstones),
            LINE_TOMBSTONE: [None] * len(line_rows) + [True] * len(tombstones),
        }
        line_rows.extend({} for _ in tombstones)
        line_table = self._table("invoice_line", line_rows, LINE_FIELDS, line_extra)
        return invoice_table, line_table

    def _table(
        self,
        table: str,
        rows: list[Mapping[str, Any]],
        known: Mapping[str, ColumnType],
        extra: Mapping[str, list[Any]],
    ) -> pa.Table:
        decided = self._field_types.setdefault(table, {})
        served = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
        columns = dict(zip(served, _transpose(rows, served), strict=True))
        names = list(dict.fromkeys(itertools.chain(extra, known, served)))
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        for name in names:
            values = extra.get(name) or columns.get(name) or [None] * len(rows)
            column_type = self._column_type(name, values, known, decided)
            if column_type is None:
                continue
            if name == LINE_TOMBSTONE:
                arrays.append(pa.array(values, pa.bool_()))
                fields.append(pa.field(name, pa.bool_()))
                continue
            arrays.append(self._to_arrow(table, name, values, column_type))
            not_null = name in ("invoice_id", "line_position")
            fields.append(pa.field(name, ARROW_TYPES[column_type], nullable=not not_null))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    @staticmethod
    def _column_type(
        name: str, values: list[Any], known: Mapping[str, ColumnType], decided: MutableMapping[str, str]
    ) -> ColumnType | None:
        if name == LINE_TOMBSTONE:
            return ColumnType.BOOL
        if name in known:
            return known[name]
        if name in decided:
            return ColumnType(decided[name])
        first = next((value for value in values if value is not None), None)
        if first is None:
            return None  # all null so far: no type to give it yet, as dlt does for dicts
        column_type = infer_column_type(name, first)
        decided[name] = column_type.value
        return column_type

    def _to_arrow(self, table: str, name: str, values: list[Any], column_type: ColumnType) -> pa.Array:
        try:
            if column_type is ColumnType.TIMESTAMP:
                return self._timestamps(values)
            if column_type is ColumnType.DATE:
                return pa.array(values, pa.string()).cast(pa.date32())
            if column_type is ColumnType.JSON:
                raise TypeError("always converted value by value")
            if column_type is ColumnType.BIGINT:
                return _whole_numbers(values)
            return pa.array(values, ARROW_TYPES[column_type])
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            pa.ArrowNotImplementedError,
            TypeError,
            ValueError,
            OverflowError,
        ):
            pass
        convert = self._value_converter(column_type)
        converted = []
        for value in values:
            try:
                converted.append(None if value is None else convert(value))
            except (ValueError, TypeError, ArithmeticError, RecursionError) as error:
                raise ApiResponseError(
                    f"Accelerate sent {_preview(value)} in {table}.{name}, which is not a valid "
                    f"{column_type.value} ({error}); nothing was loaded from this run"
                ) from None
        return pa.array(converted, ARROW_TYPES[column_type])

    def _timestamps(self, values: list[Any]) -> pa.Array:
        """The common case in arrow: naive "YYYY-MM-DD HH:MM:SS" wall time, localised, then UTC. Anything
        else (other ISO forms, offsets, a wall time in the spring gap) goes value by value."""
        raw = pa.array(values, pa.string())
        parsed = pc.strptime(raw, format=_NAIVE_FORMAT, unit="us", error_is_null=True)
        if parsed.null_count != raw.null_count:
            raise ValueError("not all in the naive format")
        local = pc.assume_timezone(parsed, timezone=self.timezone, ambiguous="earliest", nonexistent="raise")
        return local.cast(ARROW_TYPES[ColumnType.TIMESTAMP])

    def _value_converter(self, column_type: ColumnType) -> Callable[[Any], Any]:
        return {
            ColumnType.TEXT: _to_text,
            ColumnType.BIGINT: _to_int,
            ColumnType.DECIMAL: _to_decimal,
            ColumnType.DATE: self._to_date,
            ColumnType.TIMESTAMP: self._to_utc,
            ColumnType.BOOL: _to_bool,
            ColumnType.JSON: _to_json,
        }[column_type]

    def _to_utc(self, value: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise TypeError("expected a date-time string")
        parsed = dt.datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = _localise(parsed, self._zone)
        return parsed.astimezone(_UTC)

    def _to_date(self, value: Any) -> dt.date:
        if not isinstance(value, str):
            raise TypeError("expected a YYYY-MM-DD string")
        text = value.strip()
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(self._zone)
        return parsed.date()


def _localise(wall_time: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """An ambiguous autumn hour is read as its first (summer-time) occurrence, as arrow's "earliest" does;
    a wall time in the skipped spring hour keeps the offset from before the change (Python's fold=0)."""
    return wall_time.replace(tzinfo=zone, fold=0)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return _to_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _whole_numbers(values: list[Any]) -> pa.Array:
    """Arrow would truncate 1.5 to 1 in an int64 column (and merge invoice 100001.5 into 100001): only a
    column that arrow itself reads as integers (or nulls) is taken whole; any other goes value by value."""
    array = pa.array(values)
    if not (pa.types.is_integer(array.type) or pa.types.is_null(array.type)):
        raise TypeError("not all integers")
    return array.cast(ARROW_TYPES[ColumnType.BIGINT])


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    number = decimal.Decimal(value.strip() if isinstance(value, str) else value)
    if number != number.to_integral_value():
        raise ValueError("not a whole number")
    if not -(2**63) <= number < 2**63:
        raise ValueError("beyond the 64-bit integer range")
    return int(number)


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an amount")
    number = decimal.Decimal(value.strip() if isinstance(value, str) else str(value))
    if not number.is_finite():
        raise ValueError("not a finite number")
    if number.quantize(_DECIMAL_QUANTUM) != number:
        raise ValueError("more than 9 decimal places would be rounded")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n"):
        return False
    raise ValueError("not a boolean")


def _to_json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _preview(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return "a value nested too deeply to show"
    return text if len(text) <= 40 else text[:37] + "..."


def _transpose(rows: list[Mapping[str, Any]], names: list[str]) -> list[list[Any]]:
    """Rows to columns touching each row once (cache-friendly, C speed); rows that lack a key take the slow
    path of one `get` per cell."""
    if not rows or not names:
        return [[] for _ in names]
    if len(names) == 1:
        return [[row.get(names[0]) for row in rows]]
    try:
        return [list(column) for column in zip(*map(operator.itemgetter(*names), rows), strict=True)]
    except KeyError:
        return [[row.get(name) for row in rows] for name in names]


def batched(items: Iterable[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
