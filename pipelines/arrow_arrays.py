"""Arrow arrays from numpy without `pa.array`, which imports pandas, when it is installed, on first use.

pyarrow's `pa.array` asks its pandas shim whether the values are a pandas object, and the shim imports
pandas to answer: 41 MB of resident memory in a job that never uses it (measured after dlt, pyarrow and
DuckDB were imported). The reader's hot path builds its arrays here instead, from the numpy buffers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_numpy(values: np.ndarray) -> pa.Array:
    """A one-dimensional numpy array of numbers or booleans as an arrow array with no nulls."""
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    contiguous = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(contiguous.dtype), len(contiguous), [None, pa.py_buffer(contiguous)]
    )


def to_numpy(array: pa.Array | pa.ChunkedArray, null_as: int | None = None) -> np.ndarray:
    """An arrow array of integers as numpy, nulls as `null_as` (none allowed when it is None): a read-only
    view of the buffer when there are no nulls. Arrow's own `to_numpy` goes through its pandas conversion,
    and `fill_null` through `pa.scalar`, which both import pandas."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_integer(array.type):
        raise ValueError(f"expected integers, got {array.type}")
    signed = "i" if pa.types.is_signed_integer(array.type) else "u"
    dtype = np.dtype(f"{signed}{array.type.bit_width // 8}")
    values = np.frombuffer(array.buffers()[1], dtype, count=len(array), offset=array.offset * dtype.itemsize)
    if not array.null_count:
        return values
    if null_as is None:
        raise ValueError(f"expected no nulls, got {array.null_count}")
    valid = to_numpy(pc.is_valid(array).cast(pa.int8())).astype(np.bool_)
    return np.where(valid, values, null_as)


def latest_instant(column: pa.ChunkedArray | pa.Array) -> datetime | None:
    """The latest value of a time-zone-aware timestamp column as an aware UTC datetime, None when all null
    (a timestamp scalar's `as_py` imports pandas; an integer's does not)."""
    latest = pc.max(column.cast(pa.int64())).as_py()
    if latest is None:
        return None
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
    seconds, fraction = divmod(latest, per_second)
    return _EPOCH + timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // per_second)


def repeated_string(value: str, count: int) -> pa.Array:
    """`value` `count` times, as a plain string array (`pa.repeat` needs a scalar, and `pa.scalar` imports
    pandas)."""
    encoded = value.encode()
    offsets = np.arange(count + 1, dtype=np.int32) * len(encoded)
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(encoded * count)]
    )
