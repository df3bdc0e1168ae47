"""From a spooled response body to the two tables, the fast way where it is exact, the dict way elsewhere.

A plain `{"items": [...]}` body (what Accelerate sends) is split into raw items (`splitter`), and each
batch is read by arrow's JSON reader (`arrow_json`) when every column's type is known; a batch it cannot
read exactly (a new field, an odd value) is parsed into dicts and converted by `BatchConverter`, which
decides new types and names bad values. Any other outline goes the dict way whole, through ijson, with
its shape errors. Both ways give the same tables (tests/test_fast_reader.py).
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Iterable, Iterator
from typing import IO, Any

import ijson
import numpy as np
import pyarrow as pa

from pipelines.accelerate import fingerprint, settings
from pipelines.accelerate.arrow_json import NewFields, read_document
from pipelines.accelerate.client import (
    API,
    _as_mapping,
    _parse_items,
    _parser_reason,
    _refuse_unpaired_surrogates,
)
from pipelines.accelerate.convert import BatchConverter, batched
from pipelines.accelerate.raw_items import (
    Buffer,
    MappedPages,
    RawBatch,
    batches_of,
    deepest_item,
    split_in_memory,
)
from pipelines.accelerate.schema import LINES_FIELD
from pipelines.accelerate.splitter import (
    MAX_DOCUMENT_DEPTH,
    MAX_ITEM_DEPTH,
    ItemBatch,
    deepest_nesting,
    find_items,
    read_batches,
)
from pipelines.errors import ApiResponseError

# A batch of items as read: split from the body (by the byte scan or by msgspec), or parsed to dicts.
Batch = ItemBatch | RawBatch | list[dict[str, Any]]


def item_batches(body: IO[bytes]) -> Iterator[Batch]:
    """The body's items in batches: split by msgspec where the body is small enough to hold (raw_items.py),
    else by the byte scan; the dict way for a body that is not a plain `{"items": [...]}`."""
    if held_in_memory(body):
        # msgspec refuses half a surrogate pair as `_refuse_unpaired_surrogates` does: a body it splits
        # holds none, and one it refuses is searched below, where the error names the byte.
        whole = _whole(body)
        items = split_in_memory(whole)
        if items is not None:
            yield from batches_of(items, settings.BATCH_SIZE, MappedPages(whole))
            return
    _refuse_unpaired_surrogates(body)
    spans = find_items(body)
    if spans is None:
        _refuse_deeper_than_any_invoice(deepest_nesting(body))
        body.seek(0)
        yield from batched(_parse_items(body), settings.DICT_BATCH_SIZE)
        return
    yield from read_batches(body, spans, settings.BATCH_SIZE)


def held_in_memory(body: IO[bytes]) -> bool:
    """Whether the body is small enough to be read into memory whole (`settings.IN_MEMORY_BODY_BYTES`)."""
    body.flush()
    position = body.tell()
    size = body.seek(0, io.SEEK_END)
    body.seek(position)
    return size <= settings.IN_MEMORY_BODY_BYTES


# The levels of `{"items": [` around every item: the byte scan's refusal measures the whole document.
_ENVELOPE_LEVELS = 2


def _whole(body: IO[bytes]) -> Buffer:
    """The spooled file mapped into memory (read where it cannot be: an in-memory body, an empty file).
    The map is not closed here: the items are views of it, and it goes when the last of them does."""
    try:
        return mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, io.UnsupportedOperation):
        body.seek(0)
        return body.read()


def _refuse_deeper_than_any_invoice(depth: int) -> None:
    if depth > MAX_DOCUMENT_DEPTH:
        raise ApiResponseError(
            f"{API} answered with JSON nested more than {MAX_DOCUMENT_DEPTH} levels deep, which no invoice "
            "needs (and whose parsing would take memory without bound): nothing was loaded"
        )


def fingerprints_of(batch: Batch, timezone: str) -> np.ndarray:
    """The batch's fingerprints in order: of each item's bytes where the body was split, else of each
    parsed item (before `convert`, which takes the lines out)."""
    seed = fingerprint.seed_for(timezone)
    if isinstance(batch, list):
        return fingerprint.of_parsed_items(batch, seed)
    return fingerprint.of_raw_items(batch.raw_items(), seed)


def without_items(batch: Batch, left_out: np.ndarray) -> Batch:
    """The batch less the items marked, in order."""
    if isinstance(batch, list):
        return [item for item, out in zip(batch, left_out.tolist(), strict=True) if not out]
    if isinstance(batch, RawBatch):
        return batch.kept(~left_out)
    return batch.subset(~left_out)


def refilled(pieces: Iterable[tuple[Batch, np.ndarray]], size: int) -> Iterator[tuple[Batch, np.ndarray]]:
    """What is left of in-memory batches once stored versions are left out, gathered again into batches of
    `size` items (with their fingerprints), in order; other batches pass as they are.

    Why: a run that reads a window of days keeps a third of each batch or less, and arrow's reader and the
    conversion after it cost per batch as well as per item: 20,000 invoices took 12.7 us each to read in
    batches of 833, 11.1 us in batches of 2,500. The items gathered are views of the body, not copies, and
    no gathered batch holds more than `size` items (arrow's memory is a few times a batch's bytes)."""
    items: list[Any] = []  # msgspec.Raw views, waiting for a batch to fill
    item_fingerprints: list[np.ndarray] = []
    pages: MappedPages | None = None  # of the body they are views of

    def gathered() -> tuple[RawBatch, np.ndarray]:
        full = RawBatch(items.copy(), pages), np.concatenate(item_fingerprints)
        items.clear()
        item_fingerprints.clear()
        return full

    for batch, fingerprints in pieces:
        if not isinstance(batch, RawBatch):
            if items:
                yield gathered()
            yield batch, fingerprints
            continue
        raw, pages = batch.raw, batch.pages
        while raw:
            room = size - len(items)
            items.extend(raw[:room])
            item_fingerprints.append(fingerprints[:room])
            raw, fingerprints = raw[room:], fingerprints[room:]
            if len(items) >= size:
                yield gathered()
    if items:
        yield gathered()


def to_tables(
    batch: Batch,
    converter: BatchConverter,
    fingerprints: np.ndarray | None = None,
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """One (invoices, lines) pair for a batch arrow reads; a pair per DICT_BATCH_SIZE items otherwise.
    `fingerprints` are the batch's (`fingerprints_of`), when the caller has them already."""
    if fingerprints is None:
        fingerprints = fingerprints_of(batch, converter.timezone)
    if isinstance(batch, list):
        invoices, lines = converter.convert(batch)
        yield fingerprint.with_fingerprints(invoices, fingerprints), lines
        return
    if isinstance(batch, RawBatch):
        batch = batch.joined()
    document = batch.newline_delimited() if _arrow_can_take(batch) else None
    fast = None if document is None else _read_fast(batch, document, converter)
    if fast is not None:
        yield fingerprint.with_fingerprints(fast[0], fingerprints), fast[1]
        return
    items = batch.items()
    for start in range(0, len(items), settings.DICT_BATCH_SIZE):
        invoices, lines = converter.convert(decode_items(items[start : start + settings.DICT_BATCH_SIZE]))
        yield fingerprint.with_fingerprints(invoices, fingerprints[start : start + len(invoices)]), lines


def _arrow_can_take(batch: ItemBatch) -> bool:
    """No item nests deeper than arrow's reader takes; one nested deeper than any invoice fails the run."""
    if batch.nesting_checked:
        return True
    depth = deepest_item(batch)
    _refuse_deeper_than_any_invoice(depth + _ENVELOPE_LEVELS)
    return depth <= MAX_ITEM_DEPTH


def joined(
    pairs: Iterable[tuple[pa.Table, pa.Table]], rows: int, hold_small_tail: bool = False
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Consecutive pairs put together until they hold `rows` invoices. Arrow reads small batches (its
    memory is a few times the batch's bytes) while dlt, whose cost is per item, gets few large ones. The
    tables are joined without copying (chunked columns); pairs that cannot be joined go one by one.

    With `hold_small_tail`, each full item waits for the next, so that a last one under half of `rows`
    goes with it: a run that loads 10,150 invoices gives dlt one item, not one of 10,000 and one of 150
    that costs as much in dlt (~7 ms) as a few thousand rows. An item then holds up to about 1.75 x
    `rows` (a batch past `rows`, then the tail), and two are held at once: only for bodies read into
    memory (at most 64 MiB, whose pages go as they are read, raw_items.MappedPages: a 34,000-invoice
    backfill read this way peaks at 248-252 MB with it); a streamed backfill holding a finished item
    while it reads the next peaked higher (1M invoices: 281 -> 296 MB). A tail typed unlike the held item
    goes on its own, so that the held item still goes whole."""
    invoices: list[pa.Table] = []
    lines: list[pa.Table] = []
    held: tuple[list[pa.Table], list[pa.Table]] | None = None
    count = 0
    for pair in pairs:
        invoices.append(pair[0])
        lines.append(pair[1])
        count += pair[0].num_rows
        if count >= rows:
            if not hold_small_tail:
                yield from _concatenated(invoices, lines)
            else:
                if held is not None:
                    yield from _concatenated(*held)
                held = (invoices, lines)
            invoices, lines, count = [], [], 0
    if held is not None and invoices and 2 * count < rows:
        together = _joined_or_none(held[0] + invoices, held[1] + lines)
        if together is not None:
            yield together
            return
    if held is not None:
        yield from _concatenated(*held)
    if invoices:
        yield from _concatenated(invoices, lines)


def _joined_or_none(invoices: list[pa.Table], lines: list[pa.Table]) -> tuple[pa.Table, pa.Table] | None:
    """The pairs as one, or None when a column is typed two ways among them (dlt reconciles those per
    item)."""
    try:
        return (
            pa.concat_tables(invoices, promote_options="default"),
            pa.concat_tables(lines, promote_options="default"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _concatenated(invoices: list[pa.Table], lines: list[pa.Table]) -> Iterator[tuple[pa.Table, pa.Table]]:
    if len(invoices) == 1:
        yield invoices[0], lines[0]
        return
    together = _joined_or_none(invoices, lines)
    if together is None:
        yield from zip(invoices, lines, strict=True)
        return
    yield together


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
