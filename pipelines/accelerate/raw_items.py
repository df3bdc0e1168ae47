"""Splits a body small enough to hold in memory into its items with msgspec's C parser, whose items are the
bytes as sent: what an incremental run reads (its window of a few days) in a quarter of the byte scan's time.

Why: a run reads every invoice of its window, and most of them are the versions stored already, which are
left out as soon as their bytes are hashed (stored_versions.py). For those, finding where each one starts
and ends is all the work there is, and `splitter.py`'s numpy scan of every byte was most of it (0.16 s for
57 MB; msgspec 0.04 s). msgspec validates the whole document's JSON and hands each item back as a view of
the body (`msgspec.Raw`), so the fingerprints are those of the bytes as sent, as with the scan. Larger
bodies (a backfill) keep the byte scan, which reads the spooled file a chunk at a time in flat memory.

Only a plain `{"items": [objects...]}` is split here, by the splitter's own rules; anything else returns
None and the body goes the splitter's way, which reaches the same answer or names the problem. One
difference, on purpose: an item nested deeper than arrow's reader takes (no invoice is) sends the byte
scan's whole body to the general parser, where here only that item's batch goes the dict way when it is
parsed (`deepest_item`), with the same tables and the same refusal past 256 levels. Its invoices' stored
fingerprints then differ from the other way's, which only means they are loaded once more (fingerprint.py).
"""

from __future__ import annotations

import io
import logging
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress

import msgspec
import numpy as np

from pipelines.accelerate.byte_scan import positions_of
from pipelines.accelerate.splitter import (
    MAX_ITEM_DEPTH,
    OPENERS,
    PREFIX,
    SUFFIX,
    WHITESPACE,
    ItemBatch,
    deepest_nesting,
)

logger = logging.getLogger(__name__)


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    items: list[msgspec.Raw]


_DECODER = msgspec.json.Decoder(_Envelope)
# `[` (0x5B) and `{` (0x7B) differ only in this bit, and no other byte or'ed with it is `{`: one comparison
# finds both openers (a third of the time of two comparisons and an `or`, measured on 2,500 invoices).
_CASE_BIT = 0x20
Buffer = bytes | mmap.mmap


def split_in_memory(body: Buffer) -> list[msgspec.Raw] | None:
    """The body's items, each a view of `body` (bytes, or the spooled file mapped), or None when the body
    is not a plain `{"items": [...]}` of objects (or is not JSON, or nests deeper than msgspec recurses)."""
    prefix = PREFIX.match(body)
    if prefix is None:
        return None
    try:
        items = _DECODER.decode(body).items
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if not items:
        return items if SUFFIX.match(body[prefix.end() :].lstrip(WHITESPACE)) else None
    # The decoded array must be the one right after the prefix, and nothing but its close may follow: the
    # decoder keeps the last of two "items" keys, where the splitter would refuse the body.
    base = _address(body)
    first_at = _address(items[0]) - base
    last_end = _address(items[-1]) - base + len(items[-1])
    if body[prefix.end() : first_at].strip(WHITESPACE) or not SUFFIX.match(
        body[last_end:].lstrip(WHITESPACE)
    ):
        return None
    if not all(memoryview(item)[0] == OPENERS[0] for item in items):
        return None  # an array or a value where an invoice should be
    return items


class MappedPages:
    """The pages of a body mapped from its spooled file, unmapped from the process once the items in them
    are done with.

    Why: msgspec's split reads the whole body, so all of it stayed in the process's resident set until
    the run ended, on top of what the run builds from it: a 34,000-invoice backfill (a 64 MB body, read
    this way) peaked at 294-300 MB RSS in its extract, 236-246 MB with the pages given back as the
    conversion goes (bench/backfill.py --invoices 34000 --paths connector). The bytes stay in the page
    cache, as the spooled file's do on the streamed way: clean, reclaimable, and charged to a cgroup
    either way (all of it where /tmp is a tmpfs); what drops is the resident set, which RSS limits and
    the benchmark see. A view read after its page went faults it in again, so only the cost of reading
    it changes, never the bytes. Giving all back after the split, to fault in again, took 10 MB more off
    the extract, not off the run's peak (its load, 247 MB), at a fault per page read again: not done.
    Where pages cannot be given back (a body read into bytes, a system without `MADV_DONTNEED`, a
    kernel that refuses), nothing is done."""

    def __init__(self, body: Buffer) -> None:
        mapped = isinstance(body, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and len(body) > 0
        self._map = body if mapped else None
        self._base = _address(body) if mapped else 0
        self._done = 0  # bytes from the start whose items are done with

    @property
    def mapped(self) -> bool:
        """Whether pages are given back at all (see the class)."""
        return self._map is not None

    def release_through(self, item: msgspec.Raw) -> None:
        """Give back the pages that end before `item` does: everything up to it is done with."""
        if self._map is None:
            return
        end = _address(item) - self._base + len(item)
        end -= end % mmap.PAGESIZE
        if end > self._done:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, self._done, end - self._done)
            except OSError as error:  # only ever a saving: the run goes on with the pages resident
                logger.debug("could not give back the body's pages: %s", error)
                self._map = None
                return
            self._done = end


@dataclass
class RawBatch:
    """Consecutive items as msgspec gave them: views of the body, not copied. Those left out are never
    copied; the others are joined one per line, in a buffer of their own, when they are to be parsed."""

    raw: list[msgspec.Raw]
    pages: MappedPages | None = None  # of the body the items are views of, given back as items are done

    def __len__(self) -> int:
        return len(self.raw)

    def raw_items(self) -> list[msgspec.Raw]:
        return self.raw

    def items(self) -> list[bytes]:
        return [bytes(item) for item in self.raw]

    def kept(self, keep: np.ndarray) -> RawBatch:
        """The items marked `keep`, still views (nothing is copied)."""
        return RawBatch(list(compress(self.raw, keep.tolist())), self.pages)

    def joined(self) -> ItemBatch:
        """The items one per line, for arrow's reader, in a buffer of their own: the body's pages up to the
        last of them are given back (items come in the body's order, so all before it are done with)."""
        batch = ItemBatch.one_per_line(self.raw, nesting_checked=False)
        if self.pages is not None and self.raw:
            self.pages.release_through(self.raw[-1])
        return batch


def batches_of(
    items: list[msgspec.Raw], batch_size: int, pages: MappedPages | None = None
) -> Iterator[RawBatch]:
    for first in range(0, len(items), batch_size):
        yield RawBatch(items[first : first + batch_size], pages)


def deepest_item(batch: ItemBatch) -> int:
    """How deep the batch's deepest item nests, where that could be more than arrow's JSON reader takes
    (it recurses per level); 0 when no item can. An item with no more openers than that, strings
    included, cannot nest deeper: only the others are measured, by the splitter's scan."""
    openers = opener_positions(np.frombuffer(batch.region, np.uint8))
    bounds = np.searchsorted(openers, np.concatenate([batch.starts, batch.ends[-1:]]))
    suspects = np.flatnonzero(np.diff(bounds) > MAX_ITEM_DEPTH)
    return max(
        (
            deepest_nesting(io.BytesIO(batch.region[int(batch.starts[i]) : int(batch.ends[i])]))
            for i in suspects.tolist()
        ),
        default=0,
    )


def opener_positions(data: np.ndarray) -> np.ndarray:
    """Where `{` and `[` are in `data` (bytes as uint8)."""
    return positions_of(data, OPENERS[0], set_bits=_CASE_BIT)  # `{`, and `[` with it


def _address(buffer: object) -> int:
    return int(np.frombuffer(buffer, np.uint8).__array_interface__["data"][0])
