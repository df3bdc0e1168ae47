"""The sliced byte scans give what a whole-buffer numpy comparison gives, across slice boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.accelerate.byte_scan import SLICE_BYTES, count_of, positions_of


@pytest.mark.parametrize("size", [0, 1, SLICE_BYTES - 1, SLICE_BYTES, 3 * SLICE_BYTES + 17])
def test_count_and_positions_equal_the_whole_buffer_comparison(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    data[-1:] = 10  # a hit in the last byte, at the end of the last slice
    assert count_of(data, 10) == int(np.count_nonzero(data == 10))
    assert np.array_equal(positions_of(data, 10), np.flatnonzero(data == 10))
    assert np.array_equal(
        positions_of(data, ord("{"), set_bits=0x20), np.flatnonzero((data | 0x20) == ord("{"))
    )


def test_a_scan_does_not_write_to_the_data() -> None:
    data = np.frombuffer(bytes(range(256)) * 5000, np.uint8)  # read-only: a write would raise
    assert count_of(data, ord("[")) == 5000
    assert len(positions_of(data, ord("{"), set_bits=0x20)) == 10000
