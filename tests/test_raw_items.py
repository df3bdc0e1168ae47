"""A body held in memory is split by msgspec (raw_items.py) into exactly the items the byte scan finds, or
into nothing, and then goes the byte scan's way: the same outlines refused, the same half surrogate pairs
and the same depths caught, and the same tables read."""

from __future__ import annotations

import io
import json
import mmap
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fast_reader import (
    OTHER_OUTLINES,
    ZONE,
    assert_same_tables,
    fingerprinted,
    general_way,
    invoice,
    json_values,
    spans_of,
    surrogate_text,
    text,
)

from pipelines.accelerate import settings as accelerate_settings
from pipelines.accelerate.convert import BatchConverter
from pipelines.accelerate.raw_items import (
    MappedPages,
    RawBatch,
    batches_of,
    deepest_item,
    opener_positions,
    split_in_memory,
)
from pipelines.accelerate.reader import item_batches, refilled, to_tables
from pipelines.accelerate.splitter import MAX_ITEM_DEPTH, ItemBatch
from pipelines.accelerate.surrogates import unpaired_surrogate_offset
from pipelines.errors import ApiResponseError


def split(body: bytes) -> list[bytes] | None:
    items = split_in_memory(body)
    return None if items is None else [bytes(item) for item in items]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.dictionaries(text, json_values, max_size=4), max_size=6),
    indent=st.sampled_from([None, 1]),
)
def test_the_items_are_the_byte_scans_items_byte_for_byte(
    items: list[dict[str, Any]], indent: int | None
) -> None:
    body = json.dumps({"items": items}, ensure_ascii=False, indent=indent).encode()
    assert split(body) == spans_of(body)
    found = split(body)
    assert found is not None and [json.loads(item) for item in found] == items


@pytest.mark.parametrize(
    "body",
    [
        *OTHER_OUTLINES,
        b'{"items":[{"a":1}],"items":[{"b":2}]}',  # msgspec keeps the last of two keys
        b'{"items":[{"b":2}],"items":[{"a":1}]}',
        b'{"items":[{"a":tru}]}',
    ],
)
def test_other_outlines_and_invalid_json_are_left_to_the_byte_scan(body: bytes) -> None:
    assert split(body) is None


def test_an_empty_items_array_has_no_items() -> None:
    assert split(b' { "items" : [ ] } \n') == []


@settings(max_examples=200, deadline=None)
@given(text=surrogate_text)
def test_a_body_split_in_memory_holds_no_half_surrogate_pair(text: str) -> None:
    body = ('{"items":[{"s":"' + text + '"}]}').encode()
    if split(body) is not None:
        assert unpaired_surrogate_offset(io.BytesIO(body)) is None


def test_half_a_surrogate_pair_fails_with_the_byte_it_is_at() -> None:
    body = b'{"items":[{"invoice_id":1,"payer_street":"cut \\ud83d here"}]}'
    with io.BytesIO(body) as stream, pytest.raises(ApiResponseError, match=r"surrogate pair .* at byte"):
        list(item_batches(stream))


def _batch(items: list[bytes]) -> ItemBatch:
    raw = split_in_memory(b'{"items":[' + b",".join(items) + b"]}")
    assert raw is not None
    (batch,) = list(batches_of(raw, len(items)))
    return batch.joined()


def _nested(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("opener", ["[", "{"])
@pytest.mark.parametrize("depth", [1, MAX_ITEM_DEPTH - 3, MAX_ITEM_DEPTH + 1, 200])
def test_items_deeper_than_arrow_takes_are_measured_and_read_the_general_way(depth: int, opener: str) -> None:
    nested = _nested(depth, opener)
    items = [invoice(invoice_id=1), b'{"invoice_id":2,"deep":' + nested + b',"strings":"[[[[[[[["}']
    batch = _batch(items)
    measured = deepest_item(batch)  # the item's own braces are a level
    if depth == 1:
        assert measured == 0  # too few openers to be measured at all
    else:
        assert measured == depth + 1  # the strings' brackets made it a suspect; measured, they do not count
    (tables,) = list(to_tables(batch, BatchConverter(ZONE, {})))
    assert_same_tables(tables, fingerprinted(items, general_way(items, {})))


@pytest.mark.parametrize("way", ["in memory", "byte scan"])
@pytest.mark.parametrize("depth", [254, 255, 300])
def test_both_ways_refuse_the_same_depths(depth: int, way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The document nests two levels deeper than its deepest item (`{"items": [`): an item 254 deep is
    read, one 255 deep fails the run, whichever way the body was split."""
    item = b'{"invoice_id": 2, "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    body = b'{"items":[' + invoice(invoice_id=1) + b"," + item + b"]}"
    if way == "byte scan":
        monkeypatch.setattr(accelerate_settings, "IN_MEMORY_BODY_BYTES", -1)

    def read() -> list[tuple[pa.Table, pa.Table]]:
        converter = BatchConverter(ZONE, {})
        with io.BytesIO(body) as stream:
            return [pair for batch in item_batches(stream) for pair in to_tables(batch, converter)]

    if depth > 254:
        with pytest.raises(ApiResponseError, match="nested more than 256 levels"):
            read()
        return
    ((invoices, lines),) = read()
    general = general_way([invoice(invoice_id=1), item], {})
    # fingerprints differ by design: the byte scan hands a body it cannot split to the general parser
    assert_same_tables((invoices.drop_columns(["_fingerprint"]), lines), general)


def test_a_body_too_large_to_hold_is_split_by_the_byte_scan_into_the_same_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [invoice(invoice_id=number, payer_street=f"{number} High Street") for number in range(7)]
    body = b'{"items": [\n' + b" ,\n".join(items) + b"\n]}"

    def batches() -> list[tuple[list[bytes], type]]:
        with io.BytesIO(body) as stream:
            return [(batch.items(), type(batch)) for batch in item_batches(stream)]

    monkeypatch.setattr(accelerate_settings, "BATCH_SIZE", 3)
    in_memory = batches()
    monkeypatch.setattr(accelerate_settings, "IN_MEMORY_BODY_BYTES", len(body) - 1)
    scanned = batches()
    assert (
        [items for items, _ in in_memory]
        == [items for items, _ in scanned]
        == [
            items[0:3],
            items[3:6],
            items[6:7],
        ]
    )
    assert {kind for _, kind in in_memory} == {RawBatch}
    assert {kind for _, kind in scanned} == {ItemBatch}


def test_a_spooled_body_is_mapped_and_split_as_it_was_sent(tmp_path: Path) -> None:
    items = [invoice(invoice_id=number) for number in range(5)]
    body = b'{"items":[' + b",".join(items) + b"]}"
    with (tmp_path / "body").open("w+b") as spooled:
        spooled.write(body)
        (batch,) = list(item_batches(spooled))
    assert isinstance(batch, RawBatch) and batch.items() == items
    kept = batch.kept(np.array([False, True, False, True, True])).joined()
    assert kept.items() == [items[1], items[3], items[4]] and not kept.nesting_checked


def test_an_empty_spooled_body_is_left_to_the_general_parser(tmp_path: Path) -> None:
    with (tmp_path / "body").open("w+b") as spooled, pytest.raises(ApiResponseError):
        list(item_batches(spooled))


def test_what_is_left_of_in_memory_batches_is_gathered_again_in_order() -> None:
    """After the stored versions are left out, in-memory remnants are gathered into batches of the usual
    size, never more (arrow reads a few large batches faster than many small ones); another kind of batch
    passes as it is, after what was gathered before it, so the order of the answer holds."""
    items = [invoice(invoice_id=number) for number in range(10)]
    raw = split_in_memory(b'{"items":[' + b",".join(items) + b"]}")
    assert raw is not None

    def piece(first: int, last: int) -> tuple[RawBatch, np.ndarray]:
        return RawBatch(raw[first:last]), np.arange(first, last, dtype=np.int64)

    scanned = _batch(items[:2]).subset(np.array([True, True]))
    pieces = [
        piece(0, 3),
        piece(3, 5),
        (scanned, np.array([90, 91])),
        piece(5, 6),
        piece(6, 10),
        piece(9, 10),
    ]
    out = list(refilled(pieces, size=4))
    assert [(type(batch), batch.items(), fingerprints.tolist()) for batch, fingerprints in out] == [
        (RawBatch, items[0:4], [0, 1, 2, 3]),
        (RawBatch, items[4:5], [4]),
        (ItemBatch, items[:2], [90, 91]),
        (RawBatch, items[5:9], [5, 6, 7, 8]),
        (RawBatch, [items[9], items[9]], [9, 9]),
    ]


def test_openers_are_found_by_one_comparison_exactly() -> None:
    every_byte = np.arange(256, dtype=np.uint8)
    assert opener_positions(every_byte).tolist() == [ord("["), ord("{")]
    assert opener_positions(np.zeros(0, np.uint8)).tolist() == []
    # across the slices the scan takes at a time
    data = np.random.default_rng(5).integers(0, 256, 3 * (1 << 18) + 17, dtype=np.uint8)
    expected = np.flatnonzero((data == ord("{")) | (data == ord("[")))
    assert np.array_equal(opener_positions(data), expected) and len(expected) > 5000


def _resident_kib(mapped: mmap.mmap) -> int:
    """What of the mapping is resident, from the kernel's own account of this process's mappings."""
    start = np.frombuffer(mapped, np.uint8).__array_interface__["data"][0]
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.split("-")[0].isalnum() and "-" in line.split()[0]:
            low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
            if low <= start < high:
                rss = next(entry for entry in lines[number + 1 :] if entry.startswith("Rss:"))
                return int(rss.split()[1])
    raise AssertionError("the mapping is not in /proc/self/smaps")


@pytest.mark.skipif(
    not Path("/proc/self/smaps").exists() or not hasattr(mmap, "MADV_DONTNEED"), reason="Linux"
)
def test_the_pages_of_a_body_are_given_back_as_its_batches_are_joined(tmp_path: Path) -> None:
    """A body read whole stays resident no more than what is still to be read of it, and an item read
    again after its page went is still its bytes."""
    items = [invoice(invoice_id=number, paid_amount=Decimal(number)) for number in range(6_000)]
    path = tmp_path / "body.json"
    path.write_bytes(b'{"items":[' + b",".join(items) + b"]}")
    with path.open("rb") as spooled:
        mapped = mmap.mmap(spooled.fileno(), 0, access=mmap.ACCESS_READ)
    raw = split_in_memory(mapped)  # reads every byte
    whole_kib = _resident_kib(mapped)
    assert whole_kib >= len(mapped) // 1024 - 4
    first, second = batches_of(raw, 3_000, MappedPages(mapped))
    first.joined()
    assert _resident_kib(mapped) <= whole_kib / 2 + 8  # the first half went, to within a page
    second.joined()
    assert _resident_kib(mapped) <= 8
    assert [bytes(item) for item in raw] == items
    kept = first.kept(np.arange(3_000) % 2 == 0)  # what a run keeps, gathered again, shares the pages
    (gathered, _), *_ = refilled([(kept, np.arange(1_500))], 1_000)
    assert kept.pages is first.pages and gathered.pages is first.pages


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="no MADV_DONTNEED here")
def test_a_spooled_body_read_into_memory_gives_its_pages_back() -> None:
    """What `item_batches` hands on from a spooled body (as the client makes it) can give its pages back."""
    items = [invoice(invoice_id=number) for number in range(10)]
    with tempfile.TemporaryFile() as spooled:
        spooled.write(b'{"items":[' + b",".join(items) + b"]}")
        spooled.seek(0)
        (batch,) = list(item_batches(spooled))
        assert isinstance(batch, RawBatch) and batch.pages is not None and batch.pages.mapped
        assert batch.joined().items() == items
