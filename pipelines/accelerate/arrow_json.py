"""The fast way from raw invoice bytes to the `invoice` and `invoice_line` tables: arrow's JSON reader.

Arrow parses newline-delimited JSON straight into typed columns (decimals from the number's own digits,
never through a float), in C and on every core, where the dict way builds millions of Python objects
first. It is used only where it gives exactly what the dict way (`BatchConverter.convert`) gives:
every column's type is known beforehand (the seed's fields, and fields whose type an earlier batch
decided and the resource state keeps), every value has that type, timestamps are in the common naive
form. Anything else, such as a field never seen before, a number sent as a string where an integer is
due, a line that is not an object or bytes that are not UTF-8, makes `read_items` return None, and the
batch goes the dict way, which decides new types, converts value by value and names a bad value.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pipelines.accelerate.schema import (
    ARROW_TYPES,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    INVOICE_FIELDS,
    LINE_FIELDS,
    LINE_TOMBSTONE,
    LINES_FIELD,
    ColumnType,
)
from pipelines.arrow_arrays import from_numpy, to_numpy

# What arrow's reader is asked for; dates and timestamps are read as text and converted afterwards,
# exactly as the dict way converts them.
_READ_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.TEXT: pa.string(),
    ColumnType.BIGINT: pa.int64(),
    ColumnType.DECIMAL: pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.DATE: pa.string(),
    ColumnType.TIMESTAMP: pa.string(),
}
_DECIMAL_LIMIT = decimal.Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
_KEYS = ("invoice_id", "line_position")
_ADDED_LINE_COLUMNS = ("invoice_id", "line_position", LINE_TOMBSTONE)
_NAIVE_FORMAT = "%Y-%m-%d %H:%M:%S"
_BLOCK_BYTES = 1 << 20


class _NotExact(Exception):
    """This batch must go the dict way."""


def read_items(
    items: list[bytes], timezone: str, field_types: Mapping[str, Mapping[str, str]]
) -> tuple[pa.Table, pa.Table] | NewFields | None:
    """`read_document` for items given one by one."""
    if any(b"\n" in item or b"\r" in item for item in items):
        return None  # an item spread over lines (pretty-printed), which arrow cannot take as one row
    return read_document(b"\n".join(items), len(items), timezone, field_types)


@dataclass
class NewFields:
    """Fields with no type yet, each with where its first value is: the item's index for an invoice field,
    (item index, line index) for a line field. The dict way types a new field from its first value; the
    caller does the same from these values, and reads the batch again."""

    invoice: dict[str, int] = dataclasses.field(default_factory=dict)
    line: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def read_document(
    document: bytes | bytearray | memoryview,
    count: int,
    timezone: str,
    field_types: Mapping[str, Mapping[str, str]],
) -> tuple[pa.Table, pa.Table] | NewFields | None:
    """(invoice table, line table) for `count` items, one per line of `document`, as
    `BatchConverter.convert` would make them from the same items parsed; or the new fields to type first;
    or None when only the dict way can tell."""
    invoice_types = _known_types("invoice", INVOICE_FIELDS, field_types, skip=(LINES_FIELD,))
    line_types = _known_types("invoice_line", LINE_FIELDS, field_types, skip=_ADDED_LINE_COLUMNS)
    if invoice_types is None or line_types is None:
        return None
    schema = pa.schema(
        [(name, _READ_TYPES[kind]) for name, kind in invoice_types.items()]
        + [(LINES_FIELD, pa.list_(pa.struct([(n, _READ_TYPES[k]) for n, k in line_types.items()])))]
    )
    try:
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(document)),
            read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
        if table.num_rows != count:
            return None
        table.validate(full=True)  # arrow keeps bytes that are not UTF-8 as they are; this refuses them
        new_fields = _new_fields(table, invoice_types, line_types)
        if new_fields.invoice or new_fields.line:
            return new_fields
        return _invoices(table, invoice_types, timezone), _lines(table, line_types, timezone)
    except (_NotExact, pa.ArrowException, UnicodeDecodeError, ValueError, TypeError, OverflowError):
        return None


def _known_types(
    table: str,
    fixed: Mapping[str, ColumnType],
    field_types: Mapping[str, Mapping[str, str]],
    skip: tuple[str, ...],
) -> dict[str, ColumnType] | None:
    """The table's known columns (fixed first, then decided), or None if one can only be read as JSON text."""
    types = {name: kind for name, kind in fixed.items() if name not in skip}
    for name, kind in field_types.get(table, {}).items():
        if name not in skip:
            types.setdefault(name, ColumnType(kind))
    return None if ColumnType.JSON in types.values() else types


def _new_fields(
    table: pa.Table, invoice_types: Mapping[str, ColumnType], line_types: Mapping[str, ColumnType]
) -> NewFields:
    """Fields arrow met beyond the known ones, with a value somewhere (a field null throughout is skipped,
    as the dict way skips it)."""
    found = NewFields()
    for name in _unexpected(table.schema, set(invoice_types) | {LINES_FIELD}):
        found.invoice[name] = _first_valid(table[name].combine_chunks())
    lists = table[LINES_FIELD].combine_chunks()
    new_line_fields = _unexpected(pa.schema(list(lists.type.value_type)), set(line_types))
    if new_line_fields:
        flat = pc.list_flatten(lists)
        parents = to_numpy(pc.list_parent_indices(lists))
        offsets = to_numpy(lists.offsets)
        children = dict(zip([f.name for f in lists.type.value_type], flat.flatten(), strict=True))
        for name in new_line_fields:
            index = _first_valid(children[name])
            item = int(parents[index])
            found.line[name] = (item, index - int(offsets[item] - offsets[0]))
    return found


def _unexpected(schema: pa.Schema, expected: set[str]) -> list[str]:
    return [f.name for f in schema if f.name not in expected and not pa.types.is_null(f.type)]


def _first_valid(values: pa.Array) -> int:
    """Index of the first non-null value (the column is not all null: `_unexpected` left those out)."""
    return int(np.argmax(to_numpy(pc.is_valid(values).cast(pa.int8()))))


def _invoices(table: pa.Table, types: Mapping[str, ColumnType], timezone: str) -> pa.Table:
    if table["invoice_id"].null_count:
        raise _NotExact  # the dict way names the problem
    arrays = [_convert(table[name].combine_chunks(), kind, timezone) for name, kind in types.items()]
    fields = [pa.field(name, ARROW_TYPES[kind], nullable=name not in _KEYS) for name, kind in types.items()]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _lines(table: pa.Table, types: Mapping[str, ColumnType], timezone: str) -> pa.Table:
    """One row per line, numbered from 1 within its invoice; an invoice sent with an empty list gets a
    tombstone row (position 0), one sent without the field or with null gets nothing."""
    invoice_ids = table["invoice_id"].combine_chunks()
    lists = table[LINES_FIELD].combine_chunks()
    struct_type = lists.type.value_type
    lengths = pc.list_value_length(lists)
    counts = to_numpy(lengths, null_as=0)
    flat = pc.list_flatten(lists)
    if flat.null_count:
        raise _NotExact  # a null among the lines
    parents = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    positions = np.arange(len(flat), dtype=np.int64) - np.repeat(starts, counts) + 1
    emptied = np.flatnonzero(to_numpy(lengths, null_as=-1) == 0)
    removed = len(emptied)
    children = dict(zip([field.name for field in struct_type], flat.flatten(), strict=True))
    arrays = [
        pa.concat_arrays([invoice_ids.take(from_numpy(parents)), invoice_ids.take(from_numpy(emptied))]),
        from_numpy(np.concatenate([positions, np.zeros(removed, np.int64)])),
        pa.concat_arrays([pa.nulls(len(flat), pa.bool_()), from_numpy(np.ones(removed, np.bool_))]),
    ]
    fields = [
        pa.field("invoice_id", ARROW_TYPES[ColumnType.BIGINT], nullable=False),
        pa.field("line_position", ARROW_TYPES[ColumnType.BIGINT], nullable=False),
        pa.field(LINE_TOMBSTONE, pa.bool_()),
    ]
    for name, kind in types.items():
        converted = _convert(children[name], kind, timezone)
        arrays.append(pa.concat_arrays([converted, pa.nulls(removed, converted.type)]))
        fields.append(pa.field(name, ARROW_TYPES[kind]))
    if invoice_ids.type != ARROW_TYPES[ColumnType.BIGINT]:
        raise _NotExact
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _convert(values: pa.Array, kind: ColumnType, timezone: str) -> pa.Array:
    if kind is ColumnType.DATE:
        return values.cast(pa.date32())
    if kind is ColumnType.TIMESTAMP:
        parsed = pc.strptime(values, format=_NAIVE_FORMAT, unit="us", error_is_null=True)
        if parsed.null_count != values.null_count:
            raise _NotExact  # another ISO form, or an offset: the dict way reads each value
        local = pc.assume_timezone(parsed, timezone=timezone, ambiguous="earliest", nonexistent="raise")
        return local.cast(ARROW_TYPES[ColumnType.TIMESTAMP])
    if kind is ColumnType.DECIMAL and len(values) - values.null_count:
        low, high = pc.min_max(values).values()
        if not (low.as_py() > -_DECIMAL_LIMIT and high.as_py() < _DECIMAL_LIMIT):
            raise _NotExact  # arrow does not check precision; the dict way refuses what does not fit
    return values
