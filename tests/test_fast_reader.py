"""The fast reader (byte-level item splitter plus arrow's JSON reader) against the general one (ijson or
json, then dicts to columns): where the fast one answers, its answer is the general one's, exactly; where
it cannot be sure, it says so and the batch goes the general way."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.accelerate import settings as accelerate_settings
from pipelines.accelerate.arrow_json import NewFields, read_items
from pipelines.accelerate.convert import BatchConverter
from pipelines.accelerate.fingerprint import of_raw_items, seed_for, with_fingerprints
from pipelines.accelerate.raw_items import RawBatch
from pipelines.accelerate.reader import (
    decode_items,
    held_in_memory,
    item_batches,
    joined,
    to_tables,
    without_items,
)
from pipelines.accelerate.splitter import ItemBatch, deepest_nesting, find_items, read_batches
from pipelines.accelerate.surrogates import unpaired_surrogate_offset
from pipelines.emulator import World
from pipelines.emulator.server import dumps, items_body
from pipelines.errors import ApiResponseError

ZONE = "Europe/London"


def spans_of(body: bytes, chunk_bytes: int = 64) -> list[bytes] | None:
    spans = find_items(io.BytesIO(body), chunk_bytes=chunk_bytes)
    if spans is None:
        return None
    stream = io.BytesIO(body)
    return [item for batch in read_batches(stream, spans, 3) for item in batch.items()]


text = st.text(alphabet=st.sampled_from(list('ab{}[]",:\\ \u00e9\u4e2d\U0001f600\n\t')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.dictionaries(text, json_values, max_size=4), max_size=6),
    chunk=st.sampled_from([7, 64, 1 << 20]),
    indent=st.sampled_from([None, 1]),
)
def test_each_span_is_exactly_one_item(items: list[dict[str, Any]], chunk: int, indent: int | None) -> None:
    body = json.dumps({"items": items}, ensure_ascii=False, indent=indent).encode()
    found = spans_of(body, chunk)
    assert found is not None
    assert [json.loads(item) for item in found] == items
    spans = find_items(io.BytesIO(body), chunk_bytes=chunk)
    assert spans is not None
    for batch in read_batches(io.BytesIO(body), spans, 4):
        expected = [json.loads(item) for item in batch.items()]
        document = batch.newline_delimited()
        if document is None:
            assert any(b"\n" in item or b"\r" in item for item in batch.items())
        else:
            assert [json.loads(line) for line in bytes(document).split(b"\n")] == expected


@pytest.mark.parametrize("inside", [b"\r", b"\n", b"\r\n", b" "])
def test_an_item_that_spans_lines_is_not_read_one_per_line(inside: bytes) -> None:
    """Whitespace inside an item that ends a line (a CR as well as a LF) sends the batch the dict way."""
    body = b'{"items":[{"a":1},\n{"a":' + inside + b"2}]}"
    spans = find_items(io.BytesIO(body))
    assert spans is not None
    (batch,) = read_batches(io.BytesIO(body), spans, 4)
    document = batch.newline_delimited()
    assert (document is None) == (inside != b" ")
    if document is not None:
        assert bytes(document) == b'{"a":1}\n {"a": 2}'  # the comma became a newline, the newline a space


# Bodies that are not a plain {"items": [objects...]}: no splitter takes them.
OTHER_OUTLINES = [
    b'[{"a":1}]',
    b'{"items":null}',
    b'{"count":1,"items":[{"a":1}]}',
    b'{"items":[{"a":1}],"next":null}',
    b'{"items":[{"a":1},]}',
    b'{"items":[{"a":1}',
    b'{"items":[{"a":1},[1]]}',
    b'{"items":[{"a":1},2]}',
    b'{"items":[{"a":1}]}}',
    b'{"items":[{"a":1}]} x',
    b"<html><body>Service unavailable</body></html>",
    b"",
]


@pytest.mark.parametrize("body", [*OTHER_OUTLINES, b'{"items":[{"a":' + b"[" * 100 + b"]" * 100 + b"}]}"])
def test_other_outlines_are_left_to_the_general_parser(body: bytes) -> None:
    assert spans_of(body) is None


def test_an_empty_items_array_has_no_spans() -> None:
    assert spans_of(b' { "items" : [ ] } \n') == []


def general_way(items: list[bytes], field_types: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    return BatchConverter(ZONE, field_types).convert(decode_items(items))


def fingerprinted(items: list[bytes], tables: tuple[pa.Table, pa.Table]) -> tuple[pa.Table, pa.Table]:
    """What the reader hands on for a batch it split: the invoices carry their raw bytes' fingerprints."""
    return with_fingerprints(tables[0], of_raw_items(items, seed_for(ZONE))), tables[1]


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]


def assert_same_tables(fast: tuple[pa.Table, pa.Table], general: tuple[pa.Table, pa.Table]) -> None:
    for mine, theirs in zip(fast, general, strict=True):
        assert rows(mine) == rows(theirs)
        for name in theirs.column_names:
            assert mine.schema.field(name).type == theirs.schema.field(name).type, name


def world_items(count: int = 300) -> list[bytes]:
    world = World(seed=3, invoices=count)
    for _ in range(3):
        world.advance_day()
    body = items_body(world.invoices_since(dt.date(2000, 1, 1)))
    found = spans_of(body, 1 << 16)
    assert found is not None and len(found) == len(world.invoices)
    return found


def test_the_emulators_invoices_read_fast_equal_the_general_way() -> None:
    items = world_items()
    field_types: dict[str, Any] = {}
    assert isinstance(read_items(items, ZONE, field_types), NewFields), "fields beyond the seed are untyped"
    general_way(items, field_types)  # a first batch the general way decides them (the resource state)
    fast = read_items(items, ZONE, field_types)
    assert fast is not None, "the fast reader gave up on plain emulator data"
    assert_same_tables(fast, general_way(items, dict(field_types)))
    assert fast[1].filter(pa.compute.is_valid(fast[1]["_lines_removed"])).num_rows > 0, "no emptied invoice"


def invoice(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "invoice_id": 7,
        "invoice_type": "Sales",
        "paid_amount": Decimal("12.50"),
        "tax_date": "2024-03-31",
        "last_update_date": "2024-10-27 01:30:00",
        "invoice_lines": [{"quantity": Decimal("1.000"), "unit_price": Decimal("0.10")}],
    }
    base.update(fields)
    return dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    "item",
    [
        invoice(),
        invoice(invoice_lines=[]),
        invoice(invoice_lines=None),
        invoice(invoice_lines=...),
        invoice(paid_amount="12.50"),
        invoice(paid_amount=Decimal("-0.000000001")),
        invoice(payer_display_name="nul \x00 and emoji \U0001f600"),
        b'{"invoice_id": 7, "payer_display_name": "escaped pair \\ud83d\\ude00 and \\"quotes\\" \\\\"}',
    ],
)
def test_odd_but_exact_values_read_fast_equal_the_general_way(item: bytes) -> None:
    items = [item, invoice(invoice_id=8)]
    fast = read_items(items, ZONE, {})
    assert fast is not None
    assert_same_tables(fast, general_way(items, {}))


@pytest.mark.parametrize(
    "item",
    [
        invoice(invoice_id="7"),
        invoice(invoice_id=None),
        invoice(external_reference=12),
        invoice(paid_amount=Decimal("1.1234567891")),
        invoice(paid_amount=Decimal("1" + "0" * 30)),
        invoice(last_update_date="2024-10-27T01:30:00+01:00"),
        invoice(last_update_date="2024-03-31 01:30:00"),  # in the spring gap: the general way's rule
        invoice(tax_date="2024-03-31T00:00:00"),
        invoice(invoice_lines=[None]),
        invoice(invoice_lines=["a line as text"]),
        invoice(invoice_lines={"quantity": 1}),
        b'{"invoice_id": 7,\n "invoice_type": "Sales"}',
        b'{"invoice_id": 7, "invoice_type": "\xff"}',
    ],
)
def test_what_only_the_general_way_can_tell_is_left_to_it(item: bytes) -> None:
    assert not isinstance(read_items([item, invoice(invoice_id=8)], ZONE, {}), tuple)


def test_bytes_that_are_not_utf8_in_a_known_line_field_are_left_to_the_general_way() -> None:
    known = {"invoice_line": {"description": "text"}}
    good = invoice(invoice_lines=[{"description": "ok"}])
    bad = b'{"invoice_id": 7, "invoice_lines": [{"quantity": 1}, {"description": "\xc3("}]}'
    assert read_items([good], ZONE, known) is not None
    assert read_items([good, bad], ZONE, known) is None


surrogate_text = st.lists(
    st.sampled_from(["a", "\\", '\\"', "\\u0041", "\\uD83D", "\\uDE00", "\\ud83d\\ude00", "\\\\uD83D", "é"]),
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=surrogate_text, chunk=st.integers(min_value=1, max_value=16))
def test_unpaired_surrogates_are_found_whatever_the_chunk_size(text: str, chunk: int) -> None:
    body = ('{"items":[{"s":"' + text + '"}]}').encode()
    whole = unpaired_surrogate_offset(io.BytesIO(body), chunk_bytes=len(body) + 1)
    assert unpaired_surrogate_offset(io.BytesIO(body), chunk_bytes=chunk) == whole
    try:
        decoded = json.loads(body)["items"][0]["s"]
        decoded.encode("utf-8")
        paired = True
    except (UnicodeEncodeError, json.JSONDecodeError):
        paired = False
    if paired:
        assert whole is None
    elif whole is None:
        with pytest.raises(json.JSONDecodeError):  # only invalid JSON (a lone backslash) may pass unnamed
            json.loads(body)


@pytest.fixture(params=["in memory", "byte scan"])
def split_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Both ways a plain body is split: msgspec for a body small enough to hold, the byte scan beyond."""
    if request.param == "byte scan":
        monkeypatch.setattr(accelerate_settings, "IN_MEMORY_BODY_BYTES", -1)
        return ItemBatch
    return RawBatch


def test_new_fields_are_typed_from_their_first_value_as_the_general_way_types_them(split_way: type) -> None:
    items = [
        invoice(invoice_id=1),
        invoice(invoice_id=2, brand_new_field=None, invoice_lines=[{"quantity": 1}, {"colour": "red"}]),
        invoice(invoice_id=3, brand_new_field="x", settled_amount=5, invoice_lines=[{"colour": None}]),
        invoice(invoice_id=4, settled_amount=Decimal("1.25"), reviewed_date="2024-01-02"),
    ]
    body = b'{"items":[' + b",".join(items) + b"]}"
    field_types: dict[str, Any] = {}
    converter = BatchConverter(ZONE, field_types)
    with io.BytesIO(body) as stream:
        (batch,) = list(item_batches(stream))
        assert isinstance(batch, split_way)
        (fast,) = list(to_tables(batch, converter))
    general_types: dict[str, Any] = {}
    assert_same_tables(fast, fingerprinted(items, general_way(items, general_types)))
    assert field_types == general_types
    assert field_types["invoice"] == {
        "brand_new_field": "text",
        "settled_amount": "decimal",
        "reviewed_date": "date",
    }
    assert field_types["invoice_line"] == {"colour": "text"}
    assert isinstance(read_items(items, ZONE, field_types), tuple), "typed, the batch reads the fast way"


def nesting_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((nesting_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_of(v) for v in value), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(document=json_values, chunk=st.sampled_from([1, 2, 5, 64]))
def test_the_nesting_depth_is_measured_whatever_the_chunk_size(document: Any, chunk: int) -> None:
    body = json.dumps({"items": [document]}, ensure_ascii=False).encode()
    assert deepest_nesting(io.BytesIO(body), chunk_bytes=chunk) == nesting_of({"items": [document]})


def test_a_body_nested_beyond_any_invoice_is_refused_before_parsing() -> None:
    deep = b'{"items":[{"invoice_id":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    with io.BytesIO(deep) as stream, pytest.raises(ApiResponseError, match="nested more than 256 levels"):
        list(item_batches(stream))


def test_read_batches_are_joined_into_items_of_the_asked_size_without_losing_a_row() -> None:
    small = [
        (pa.table({"invoice_id": [n, n + 1], "note": pa.nulls(2)}), pa.table({"invoice_id": [n] * 3}))
        for n in range(0, 20, 2)
    ]
    small[7] = (pa.table({"invoice_id": [14, 15], "note": ["a", None]}), small[7][1])  # a column typed later
    items = list(joined(small, rows=6))
    assert [invoices.num_rows for invoices, _ in items] == [6, 6, 6, 2]
    assert pa.concat_tables([invoices for invoices, _ in items], promote_options="default").to_pydict() == {
        "invoice_id": list(range(20)),
        "note": [None] * 14 + ["a"] + [None] * 5,
    }
    assert sum(lines.num_rows for _, lines in items) == 30


def _pairs(sizes: list[int]) -> list[tuple[pa.Table, pa.Table]]:
    first = np.cumsum([0, *sizes])
    return [
        (pa.table({"invoice_id": range(start, start + size)}), pa.table({"invoice_id": [start] * 2}))
        for start, size in zip(first.tolist(), sizes, strict=False)
    ]


@pytest.mark.parametrize(
    ("sizes", "hold", "items"),
    [
        ([4, 4, 3], False, [8, 3]),
        ([4, 4, 3], True, [11]),  # the last under half an item goes with the one before
        ([4, 4, 4], True, [8, 4]),  # half an item or more is an item of its own
        ([3], True, [3]),  # no full item before it: nothing to join it to
        ([4, 4, 4, 4, 3], True, [8, 11]),  # only the last full item waits for the tail
        ([8, 3], True, [11]),
        ([8], True, [8]),
        ([], True, []),
    ],
)
def test_a_small_last_item_joins_the_one_before_when_held(
    sizes: list[int], hold: bool, items: list[int]
) -> None:
    out = list(joined(_pairs(sizes), rows=8, hold_small_tail=hold))
    assert [invoices.num_rows for invoices, _ in out] == items
    assert [row for invoices, _ in out for row in invoices["invoice_id"].to_pylist()] == list(
        range(sum(sizes))
    )
    assert sum(lines.num_rows for _, lines in out) == 2 * len(sizes)


def test_a_small_last_item_typed_unlike_the_one_before_goes_alone_and_leaves_that_one_whole() -> None:
    pairs = _pairs([4, 4, 1])
    pairs[2] = (pairs[2][0].append_column("note", pa.array([2.5])), pairs[2][1])
    pairs[0] = (pairs[0][0].append_column("note", pa.array(["a"] * 4)), pairs[0][1])
    out = list(joined(pairs, rows=8, hold_small_tail=True))
    assert [invoices.num_rows for invoices, _ in out] == [8, 1]
    assert [row for invoices, _ in out for row in invoices["invoice_id"].to_pylist()] == list(range(9))


@pytest.mark.parametrize(("limit", "in_memory"), [(10, True), (9, False)])
def test_only_a_body_read_into_memory_whole_holds_items(
    limit: int, in_memory: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule `item_batches` splits by, asked without moving the reader."""
    monkeypatch.setattr(accelerate_settings, "IN_MEMORY_BODY_BYTES", limit)
    with io.BytesIO(b'{"items":[]}'[:10]) as body:
        body.seek(3)
        assert held_in_memory(body) is in_memory
        assert body.tell() == 3


def test_read_batches_typed_two_ways_go_to_dlt_one_by_one() -> None:
    clash = [
        (pa.table({"invoice_id": [1], "note": ["a"]}), pa.table({"invoice_id": [1]})),
        (pa.table({"invoice_id": [2], "note": [2.5]}), pa.table({"invoice_id": [2]})),
    ]
    assert [pair[0].to_pydict() for pair in joined(clash, rows=10)] == [
        {"invoice_id": [1], "note": ["a"]},
        {"invoice_id": [2], "note": [2.5]},
    ]


@pytest.mark.parametrize("keep", [[True, False, True, False], [False, False, False, True], [True] * 4])
def test_a_batch_less_some_items_reads_as_those_items_alone(keep: list[bool], split_way: type) -> None:
    """What a run parses once the stored versions are left out: the other items, exactly, in order."""
    items = [invoice(invoice_id=number, paid_amount=Decimal(number)) for number in range(1, 5)]
    body = b'{"items": [' + b" ,\n ".join(items) + b"]}"
    with io.BytesIO(body) as stream:
        (batch,) = list(item_batches(stream))
        assert isinstance(batch, split_way)
        subset = without_items(batch, ~np.array(keep))
        kept = [item for item, wanted in zip(items, keep, strict=True) if wanted]
        assert subset.items() == kept
        (fast,) = list(to_tables(subset, BatchConverter(ZONE, {})))
    assert_same_tables(fast, fingerprinted(kept, general_way(kept, {})))
