"""Finds where each invoice starts and ends in a spooled `{"items": [...]}` body, without parsing it.

Why: building a Python dict per invoice (ijson) and then columns from the dicts is most of a backfill's
time. Knowing each item's byte span, batches of items go to arrow's JSON reader as newline-delimited JSON,
which parses them straight into typed columns in C, on every core.

How: JSON's structure is visible in its bytes. A quote not preceded by an odd run of backslashes opens or
closes a string; outside strings, `{ [` go one level down and `} ]` one up. numpy finds these in a whole
chunk at once, so a 190 MB body is scanned in about 0.3 s in a few MB, and the scan also
proves the document's outline (an object whose first and only key is `items`, an array of objects). Any
other outline, a truncated body or something between items that is not a comma returns None before a
single item is handed on, and the general streaming parser reads the body instead, with its errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from pipelines.accelerate.byte_scan import count_of

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

PREFIX = re.compile(rb'\A[ \t\r\n]*\{[ \t\r\n]*"items"[ \t\r\n]*:[ \t\r\n]*\[')
SUFFIX = re.compile(rb"\A\][ \t\r\n]*\}[ \t\r\n]*\Z")
WHITESPACE = b" \t\r\n"
# A chunk's numpy temporaries stay in the CPU's cache and the allocator's reach: the 189 MB backfill body
# was scanned in 0.29 s in 1 MiB chunks, 0.53 s in 8 MiB ones (fresh memory from the OS each time).
_CHUNK_BYTES = 1 << 20
_HEAD_BYTES = 4096
# Nesting inside an item beyond which the fast reader leaves the body to the general parser (an invoice is
# 3 deep: the item, its lines, a line); a body nested deeper than MAX_DOCUMENT_DEPTH is refused.
MAX_ITEM_DEPTH = 64
MAX_DOCUMENT_DEPTH = 256
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
OPENERS = (ord("{"), ord("["))
_NEWLINE, _CARRIAGE_RETURN = ord("\n"), ord("\r")
_CLOSE_OBJECT = ord("}")


@dataclass
class ItemSpans:
    """Byte offsets in the body: item i is body[starts[i]:ends[i]] (its braces included)."""

    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


def find_items(body: IO[bytes], chunk_bytes: int = _CHUNK_BYTES) -> ItemSpans | None:
    """The span of every item, or None when the body is not a plain `{"items": [objects...]}`."""
    body.seek(0)
    head = body.read(chunk_bytes)
    while len(head) < _HEAD_BYTES and (more := body.read(chunk_bytes)):
        head += more  # enough to see the outline's start, whatever the chunk size
    prefix = PREFIX.match(head)
    if prefix is None:
        return None
    buffer, offset = head[prefix.end() :], prefix.end()
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    first = True
    while True:
        scan = _scan(buffer)
        if scan is None:
            return None
        item_starts, item_ends, closed_at = scan
        if not _separators_are_commas(buffer, item_starts, item_ends, first, closed_at):
            return None
        if len(item_starts):
            first = False
            starts.append(item_starts + offset)
            ends.append(item_ends + offset)
        if closed_at is not None:
            rest = buffer[closed_at:] + body.read()
            return ItemSpans(_join(starts), _join(ends)) if SUFFIX.match(rest) else None
        consumed = int(item_ends[-1]) if len(item_ends) else 0
        more = body.read(chunk_bytes)
        if not more:
            return None  # truncated: the general parser names the problem
        buffer, offset = buffer[consumed:] + more, offset + consumed


@dataclass
class ItemBatch:
    """Consecutive items as one piece of the body, and where each item lies in it. The piece is a view of
    a buffer that the next batch reuses: use a batch before asking for the next."""

    region: memoryview
    starts: np.ndarray
    ends: np.ndarray
    # Whether the items are known to nest no deeper than arrow's reader takes: the byte scan measures every
    # item; items split by msgspec (raw_items.py) are measured when parsed, only those that could be deep.
    nesting_checked: bool = True

    def __len__(self) -> int:
        return len(self.starts)

    def items(self) -> list[bytes]:
        return [
            bytes(self.region[s:e]) for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)
        ]

    def raw_items(self) -> Iterator[memoryview]:
        """Each item's bytes, as views (valid until the next batch)."""
        region = self.region
        for start, end in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            yield region[start:end]

    def subset(self, keep: np.ndarray) -> ItemBatch:
        """The items marked `keep`, in order, one per line in a buffer of their own (a copy: the items
        left out are not parsed, and this batch's buffer is reused by the next)."""
        region = self.region
        kept = zip(self.starts[keep].tolist(), self.ends[keep].tolist(), strict=True)
        return ItemBatch.one_per_line([region[s:e] for s, e in kept], self.nesting_checked)

    @classmethod
    def one_per_line(cls, items: list[Buffer], nesting_checked: bool) -> ItemBatch:
        """The items, each followed by a newline, in one buffer of their own (copied once)."""
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        ends = np.cumsum(lengths + 1) - 1
        return cls(memoryview(bytearray(b"\n").join(items)), ends - lengths, ends, nesting_checked)

    def newline_delimited(self) -> memoryview | None:
        """The items one per line (what arrow's JSON reader takes), made in place by turning what lies
        between items (a comma, maybe spaces) into a newline and spaces; None if an item itself spans
        lines (pretty-printed JSON), which that reader cannot take as one row."""
        view = np.frombuffer(self.region, np.uint8)
        gap_starts, gap_lengths = self.ends[:-1], self.starts[1:] - self.ends[:-1]
        if len(gap_starts):
            offsets = np.arange(int(gap_lengths.sum())) - np.repeat(
                np.cumsum(gap_lengths) - gap_lengths, gap_lengths
            )
            view[np.repeat(gap_starts, gap_lengths) + offsets] = 0x20
            view[gap_starts] = _NEWLINE
        if count_of(view, _NEWLINE) != len(gap_starts) or count_of(view, _CARRIAGE_RETURN):
            return None
        return self.region


def read_batches(body: IO[bytes], spans: ItemSpans, batch_size: int) -> Iterator[ItemBatch]:
    """The items `batch_size` at a time, each batch read from the body in one piece into one buffer that
    is reused (a fresh 40 MB bytes object per batch would leave the C allocator holding several)."""
    buffer = bytearray()
    for first in range(0, len(spans), batch_size):
        starts = spans.starts[first : first + batch_size]
        ends = spans.ends[first : first + batch_size]
        base = int(starts[0])
        size = int(ends[-1]) - base
        if len(buffer) < size:
            buffer = bytearray(size)
        region = memoryview(buffer)[:size]
        body.seek(base)
        if body.readinto(region) != size:
            raise OSError("the spooled response body changed while it was read")
        yield ItemBatch(region, starts - base, ends - base)


def _scan(buffer: bytes) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """Complete items in `buffer` (which starts outside any string, between items) as start and end
    offsets, and where the items array closes if it does. None if an item is not an object."""
    structural, chars, opens, _ = _brackets_outside_strings(np.frombuffer(buffer, np.uint8), in_string=False)
    depth_after = np.where(opens, 1, -1).cumsum()
    if len(depth_after) and int(depth_after.max()) > MAX_ITEM_DEPTH:
        return None  # arrow's JSON reader recurses per level and overflows the C stack (SIGSEGV) when deep
    closed = np.flatnonzero(depth_after < 0)
    closed_at = int(structural[closed[0]]) if len(closed) else None
    if closed_at is not None:
        structural, chars, opens, depth_after = (
            structural[: closed[0]],
            chars[: closed[0]],
            opens[: closed[0]],
            depth_after[: closed[0]],
        )
    item_open = opens & (depth_after == 1)
    item_close = ~opens & (depth_after == 0)
    if np.any(chars[item_open] != OPENERS[0]) or np.any(chars[item_close] != _CLOSE_OBJECT):
        return None  # an array where an object should be
    starts = structural[item_open]
    ends = structural[item_close] + 1
    return starts[: len(ends)], ends, closed_at


def _brackets_outside_strings(
    data: np.ndarray, in_string: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Positions of the brackets outside strings (`data` starting inside a string if `in_string`), their
    bytes, whether each opens a level, and how many string quotes `data` holds."""
    quotes = _unescaped_quotes(data)
    structural = np.flatnonzero((data == 0x7B) | (data == 0x7D) | (data == 0x5B) | (data == 0x5D))
    structural = structural[(np.searchsorted(quotes, structural) & 1) == int(in_string)]
    chars = data[structural]
    return structural, chars, (chars == OPENERS[0]) | (chars == OPENERS[1]), len(quotes)


def _unescaped_quotes(data: np.ndarray) -> np.ndarray:
    """Positions of `"` that open or close a string: not preceded by an odd run of backslashes."""
    quotes = np.flatnonzero(data == _QUOTE)
    if not len(quotes):
        return quotes
    after_backslash = np.flatnonzero((quotes > 0) & (data[np.maximum(quotes - 1, 0)] == _BACKSLASH))
    if not len(after_backslash):
        return quotes
    positions = quotes[after_backslash]
    run = np.ones(len(positions), np.int64)
    active = np.ones(len(positions), bool)
    back = 2
    while active.any():
        look = positions - back
        reachable = active & (look >= 0)
        hit = np.zeros(len(positions), bool)
        hit[reachable] = data[look[reachable]] == _BACKSLASH
        run += hit
        active = hit
        back += 1
    keep = np.ones(len(quotes), bool)
    keep[after_backslash[(run & 1) == 1]] = False
    return quotes[keep]


def deepest_nesting(body: IO[bytes], chunk_bytes: int = _CHUNK_BYTES) -> int:
    """How deep the document nests, found by the same byte scan over any outline, a chunk at a time. The
    dict way's parser (ijson) needs memory that grows with the square of the depth: a 65 KB body nested
    30,000 deep took 2.3 GB, so depth is measured before it runs."""
    body.seek(0)
    deepest = depth = 0
    in_string = False
    carry = b""
    while True:
        chunk = body.read(chunk_bytes)
        buffer = carry + chunk
        if chunk:
            cut = len(buffer)
            while cut > 0 and buffer[cut - 1] == _BACKSLASH:
                cut -= 1  # a run of backslashes stays whole, with the byte it escapes
            buffer, carry = buffer[:cut], buffer[cut:]
        structural, _, opens, quote_count = _brackets_outside_strings(
            np.frombuffer(buffer, np.uint8), in_string
        )
        if len(structural):
            levels = depth + np.where(opens, 1, -1).cumsum()
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
        in_string ^= bool(quote_count & 1)
        if not chunk:
            body.seek(0)
            return deepest


def _separators_are_commas(
    buffer: bytes, starts: np.ndarray, ends: np.ndarray, first: bool, closed_at: int | None
) -> bool:
    """Between items only a comma (and whitespace); nothing after the last item but the closing `]`."""
    previous_end = 0
    for index, start in enumerate(starts.tolist()):
        gap = buffer[previous_end:start].strip(WHITESPACE)
        if gap != (b"" if first and index == 0 else b","):
            return False
        previous_end = int(ends[index]) if index < len(ends) else start
    if closed_at is not None:
        return buffer[previous_end:closed_at].strip(WHITESPACE) == b""
    return True


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
