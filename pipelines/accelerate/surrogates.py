"""Half of a UTF-16 surrogate pair in a JSON string (`\\uD83D` with no `\\uDE00` after it): text cut inside
an emoji, say. No database stores it as text, and the parsers would not say so: ijson's C backend turns
an unpaired high half into "?" without a word. So the spooled body is searched for one before parsing,
a chunk at a time, so that memory stays flat however large the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_CHUNK_BYTES = 8 << 20
_ESCAPE_LENGTH = 6
_BACKSLASH = 0x5C


def unpaired_surrogate_offset(body: IO[bytes], chunk_bytes: int = _CHUNK_BYTES) -> int | None:
    """Byte offset of the first unpaired surrogate escape in the body, or None. Leaves the body at 0."""
    waiting_high: int | None = None  # a high half, whose low half must follow at once
    try:
        for start, is_high in _surrogate_escapes(body, chunk_bytes):
            if waiting_high is not None:
                if is_high or start != waiting_high + _ESCAPE_LENGTH:
                    return waiting_high
                waiting_high = None
            elif is_high:
                waiting_high = start
            else:
                return start
        return waiting_high
    finally:
        body.seek(0)


def _surrogate_escapes(body: IO[bytes], chunk_bytes: int) -> Iterator[tuple[int, bool]]:
    """(body offset, is a high half) of each surrogate escape, in order, each once."""
    body.seek(0)
    buffer, buffer_at, last_seen = b"", 0, -1
    while True:
        chunk = body.read(chunk_bytes)
        buffer += chunk
        if b"\\u" in buffer:
            for match in _SURROGATE_ESCAPE.finditer(buffer):
                start = buffer_at + match.start()
                if start > last_seen and not _is_escaped(buffer, match.start()):
                    last_seen = start
                    yield start, match.group()[3:4] in b"89abAB"
        if not chunk:
            return
        keep = _carry_start(buffer)
        buffer, buffer_at = buffer[keep:], buffer_at + keep


def _is_escaped(buffer: bytes, position: int) -> bool:
    """A backslash after an odd run of backslashes is text, not an escape: `\\\\uD800` is not a surrogate."""
    run = 0
    while position - run > 0 and buffer[position - run - 1] == _BACKSLASH:
        run += 1
    return run % 2 == 1


def _carry_start(buffer: bytes) -> int:
    """Where the next buffer starts: the last bytes may hold the start of an escape, and the run of
    backslashes before them must stay whole for `_is_escaped`."""
    keep = max(0, len(buffer) - _ESCAPE_LENGTH)
    while keep > 0 and buffer[keep - 1] == _BACKSLASH:
        keep -= 1
    return keep
