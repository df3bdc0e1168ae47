"""From a spooled response body to the two tables, the fast way where it is exact, the dict way elsewhere.

A plain `{"items": [...]}` body (what Accelerate sends) is split into raw items (`splitter`), and each
batch is read by arrow's JSON reader (`arrow_json`) when every column's type is known; a batch it cannot
read exactly (a new field, an odd value) is parsed into dicts and converted by `BatchConverter`, which
decides new types and names bad values. Any other outline goes the dict way whole, through ijson, with
its shape errors. Both ways give the same tables (tests/test_fast_reader.py).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any

import ijson
import pyarrow as pa

from pipelines.accelerate import settings
from pipelines.accelerate.arrow_json import NewFields, read_document
from pipelines.accelerate.client import (
    API,
    _as_mapping,
    _parse_items,
    _parser_reason,
    _refuse_unpaired_surrogates,
)
from pipelines.accelerate.convert import BatchConverter, batched
from pipelines.accelerate.schema import LINES_FIELD
from pipelines.accelerate.splitter import (
    MAX_DOCUMENT_DEPTH,
    ItemBatch,
    deepest_nesting,
    find_items,
    read_batches,
)
from pipelines.errors import ApiResponseError


def item_batches(body: IO[bytes]) -> Iterator[ItemBatch | list[dict[str, Any]]]:
    _refuse_unpaired_surrogates(body)
    spans = find_items(body)
    if spans is None:
        if deepest_nesting(body) > MAX_DOCUMENT_DEPTH:
            raise ApiResponseError(
                f"{API} answered with JSON nested more than {MAX_DOCUMENT_DEPTH} levels deep, which no invoice "
                "needs (and whose parsing would take memory without bound): nothing was loaded"
            )
        body.seek(0)
        yield from batched(_parse_items(body), settings.DICT_BATCH_SIZE)
        return
    yield from read_batches(body, spans, settings.BATCH_SIZE)


def to_tables(
    batch: ItemBatch | list[dict[str, Any]], converter: BatchConverter
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """One (invoices, lines) pair for a batch arrow reads; a pair per DICT_BATCH_SIZE items otherwise."""
    if isinstance(batch, list):
        yield converter.convert(batch)
        return
    document = batch.newline_delimited()
    fast = None if document is None else _read_fast(batch, document, converter)
    if fast is not None:
        yield fast
        return
    items = batch.items()
    for start in range(0, len(items), settings.DICT_BATCH_SIZE):
        yield converter.convert(decode_items(items[start : start + settings.DICT_BATCH_SIZE]))


def _read_fast(
    batch: ItemBatch, document: memoryview, converter: BatchConverter
) -> tuple[pa.Table, pa.Table] | None:
    """Arrow's reading of the batch; when it meets fields with no type yet, they are typed from their first
    values (parsed the dict way, so typed exactly as the dict way would) and the batch is read again."""
    result = read_document(document, len(batch), converter.timezone, converter.field_types)
    if isinstance(result, NewFields):
        _decide(result, batch, converter)
        result = read_document(document, len(batch), converter.timezone, converter.field_types)
    return result if isinstance(result, tuple) else None


def _decide(new_fields: NewFields, batch: ItemBatch, converter: BatchConverter) -> None:
    wanted = sorted({*new_fields.invoice.values(), *(item for item, _ in new_fields.line.values())})
    items = batch.items()
    parsed = dict(zip(wanted, decode_items([items[index] for index in wanted]), strict=True))
    for name, index in new_fields.invoice.items():
        converter.decide("invoice", name, parsed[index].get(name))
    for name, (index, position) in new_fields.line.items():
        lines = parsed[index].get(LINES_FIELD)
        line = lines[position] if isinstance(lines, list) and position < len(lines) else None
        if isinstance(line, dict):
            converter.decide("invoice_line", name, line.get(name))


def decode_items(items: list[bytes]) -> list[dict[str, Any]]:
    """The dict way for one raw batch: the same parser, and so the same values and errors, as a body the
    splitter cannot take."""
    document = io.BytesIO(b"[" + b",".join(items) + b"]")
    try:
        return [_as_mapping(item) for item in ijson.items(document, "item", use_float=False)]
    except (ijson.JSONError, UnicodeDecodeError) as error:
        raise ApiResponseError(
            f"{API} answered 200 with a body that is not valid JSON ({_parser_reason(error)}). Nothing was "
            "loaded: check sources.accelerate.base_url points at the API v2 root"
        ) from None
