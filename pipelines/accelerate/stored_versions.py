"""Which invoice versions the destination already holds, so a run reads and loads only what changed.

A run asks for every invoice updated since the cursor's day less `lookback_days` (late commits land in the
past), so most of what it reads was loaded by the run before: all of it when nothing changed. Merging
those rows again is correct but costs as much as loading them anew, and so does parsing them. An item whose
fingerprint (`fingerprint.py`: a hash of its bytes as sent, id and lines included) is stored is the version
already stored, so it is left out before it is parsed. Read from the destination, not from state, and only
rows of loads dlt recorded as complete: what is stored is the truth, even after someone deleted rows by
hand, and a load that died half-way (its invoices merged, its lines not) is not taken for done.

An answer may list an invoice twice. A clean load keeps the version with the newest `last_update_date`
(the merge's `dedup_sort`), so leaving the stored version out must not change the outcome: another version
read after it is loaded only if it is not older than the stored one, and once another version has gone to
the load, the stored one is loaded too if it is the newer, and the merge picks between them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.schema import Schema
from dlt.common.schema.typing import C_DLT_LOAD_ID

from pipelines.accelerate.fingerprint import FINGERPRINT
from pipelines.arrow_arrays import from_numpy, to_numpy
from pipelines.delta_tables import writes_delta_tables
from pipelines.destination_query import query_columns

logger = logging.getLogger(__name__)

_KEY, _STAMP, _LOAD_ID = "invoice_id", "last_update_date", C_DLT_LOAD_ID
# A null (or unreadable) id, fingerprint or stamp. Stored rows with one are not kept: they match nothing,
# so their invoices are parsed and loaded. A version read with a null stamp loses to a stored one with a
# stamp, as in the merge (NULLS LAST under DESC).
_NULL = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SQL = (
    "SELECT {id}, {fingerprint}, {stamp} FROM {table} WHERE {stamp} >= %s AND {load_id} IN "
    "(SELECT {loads_load_id} FROM {loads} WHERE {loads_status} = 0)"
)


class StoredVersions:
    """(fingerprint, invoice_id, last_update_date) of the stored invoices updated since the run's first day,
    sorted by fingerprint, and what this run did with each: five integers and two flags an invoice, so
    42 MB for a million of them."""

    def __init__(self, ids: np.ndarray, fingerprints: np.ndarray, stamps: np.ndarray) -> None:
        # The rules below keep one state per invoice, so an id stored twice (a table edited by hand) is
        # not kept either: its invoice is loaded, and the merge leaves one row.
        known = (ids != _NULL) & (fingerprints != _NULL) & (stamps != _NULL) & ~_repeated(ids)
        ids, fingerprints, stamps = ids[known], fingerprints[known], stamps[known]
        order = np.argsort(fingerprints, kind="stable")
        self._fingerprints = fingerprints[order]
        self._ids = ids[order]
        self._stamps = stamps[order]
        self._by_id = np.argsort(self._ids, kind="stable")
        self._left_out = np.zeros(len(order), bool)  # its version was read and left out in this run
        self._loaded = np.zeros(len(order), bool)  # another version of the invoice went to the load
        self._loaded_stamp = np.full(len(order), _NULL, np.int64)  # the newest stamp among those

    @classmethod
    def none(cls) -> StoredVersions:
        empty = np.empty(0, np.int64)
        return cls(empty, empty, empty)

    def __len__(self) -> int:
        return len(self._ids)

    @classmethod
    def read(cls, pipeline: dlt.Pipeline, extracting: Schema, since: datetime) -> StoredVersions:
        """Versions stored with `last_update_date` at or after `since`, by completed loads. None when the
        schema being extracted has no invoice table with these columns (the first run, a full refresh,
        which drops the stored rows, or tables loaded before fingerprints were kept), and on Delta tables,
        whose loads record is not a table to join (every invoice read is loaded there, as before). The
        read only saves work: if it fails, the run loads everything it reads."""
        columns = extracting.tables.get("invoice", {}).get("columns") or {}
        if not {_KEY, _STAMP, _LOAD_ID, FINGERPRINT} <= set(columns) or writes_delta_tables(pipeline):
            return cls.none()
        try:
            stored = query_columns(
                pipeline,
                "invoice",
                _SQL,
                since,
                columns={
                    "id": _KEY,
                    "fingerprint": FINGERPRINT,
                    "stamp": _STAMP,
                    "load_id": _LOAD_ID,
                    "loads_load_id": "load_id",
                    "loads_status": "status",
                },
            )
        except Exception as error:
            logger.warning(
                "accelerate: could not read which invoice versions are stored (%s); every invoice read is "
                "loaded",
                type(error).__name__,
            )
            return cls.none()
        if stored is None or len(stored) == 0:
            return cls.none()
        if isinstance(stored, pa.Table):
            ids, fingerprints = _as_integers(stored.column(0)), _as_integers(stored.column(1))
            stamps = _stamps(stored.column(2))
        else:
            ids = _integers([row[0] for row in stored])
            fingerprints = _integers([row[1] for row in stored])
            stamps = _instants([row[2] for row in stored])
        if ids is None or fingerprints is None:
            return cls.none()
        return cls(ids, fingerprints, stamps)

    def leave_out(self, fingerprints: np.ndarray) -> np.ndarray:
        """Which of these items (by fingerprint, in the answer's order) to leave out unparsed: those whose
        version is stored, unless an older version of the same invoice has gone to the load already (then
        the stored one goes too, and the merge keeps it)."""
        if not len(self) or not len(fingerprints):
            return np.zeros(len(fingerprints), bool)
        rows, found = _positions(self._fingerprints, fingerprints)
        left_out = found & (~self._loaded[rows] | (self._loaded_stamp[rows] >= self._stamps[rows]))
        self._left_out[rows[left_out]] = True
        return left_out

    def keep_newer(self, invoices: pa.Table, lines: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The invoices read, less any older than a stored version of theirs that this run left out (the
        merge would have kept the stored one), with their lines; the rest are marked as loaded."""
        if not len(self) or invoices.num_rows == 0 or _KEY not in invoices.column_names:
            return invoices, lines
        ids = _as_integers(invoices[_KEY])
        if ids is None:
            return invoices, lines
        at, found = _positions(self._ids, ids, self._by_id)
        if not found.any():
            return invoices, lines
        rows, stamps = self._by_id[at], _stamps_of(invoices)
        older = found & self._left_out[rows] & (stamps < self._stamps[rows])
        if older.any():
            invoices, lines = _without(invoices, lines, ids, older)
            found &= ~older
        self._loaded[rows[found]] = True
        np.maximum.at(self._loaded_stamp, rows[found], stamps[found])
        return invoices, lines

    def newest_left_out(self) -> datetime | None:
        """The newest `last_update_date` of the versions left out: the cursor must move past them as if
        they had been parsed."""
        stamps = self._stamps[self._left_out]
        return _EPOCH + int(stamps.max()) * _MICROSECOND if len(stamps) else None


def _positions(
    stored: np.ndarray, values: np.ndarray, sorter: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Where each value is in `stored` (sorted, or in `sorter`'s order: then the position is in that
    order), and whether it is there at all."""
    at = np.minimum(np.searchsorted(stored, values, sorter=sorter), len(stored) - 1)
    rows = at if sorter is None else sorter[at]
    return at, stored[rows] == values


def _repeated(values: np.ndarray) -> np.ndarray:
    """Which values occur more than once."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def _without(
    invoices: pa.Table, lines: pa.Table, ids: np.ndarray, dropped: np.ndarray
) -> tuple[pa.Table, pa.Table]:
    """The invoices less the dropped rows, and the lines less those of invoices with no row left."""
    invoices = invoices.filter(from_numpy(~dropped))
    gone = np.setdiff1d(ids[dropped], ids[~dropped])
    if len(gone) and lines.num_rows and _KEY in lines.column_names:
        gone_ids = from_numpy(gone).cast(lines.schema.field(_KEY).type)
        lines = lines.filter(pc.invert(pc.is_in(lines[_KEY], value_set=gone_ids)))
    return invoices, lines


def _stamps_of(invoices: pa.Table) -> np.ndarray:
    """`last_update_date` as microseconds since the epoch, a null (or a column that is not a timestamp)
    as `_NULL`: a version whose stamp cannot be read is older than any stored one with a stamp."""
    if _STAMP not in invoices.column_names:
        return np.full(invoices.num_rows, _NULL, np.int64)
    return _stamps(invoices[_STAMP])


def _stamps(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as microseconds since the epoch (a naive one is UTC, as dlt stores them), `_NULL` for a
    null or for a column that is not timestamps."""
    if not pa.types.is_timestamp(column.type):
        return np.full(len(column), _NULL, np.int64)
    micros = pc.cast(column, pa.timestamp("us", column.type.tz)).cast(pa.int64())
    return to_numpy(micros, null_as=_NULL)


def _as_integers(column: pa.ChunkedArray) -> np.ndarray | None:
    """Ids as int64, or None for a column that is not whole numbers. A null gets `_NULL`, which no stored
    id has, so it matches nothing and its row is loaded."""
    if not (pa.types.is_integer(column.type) or pa.types.is_decimal(column.type)):
        return None
    try:
        column = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return to_numpy(column, null_as=_NULL)


def _integers(values: list[Any]) -> np.ndarray | None:
    """Stored ids or fingerprints (ints, or decimals where a destination keeps BIGINT as NUMBER) as int64,
    a null as `_NULL`; None if one is not a whole number."""
    try:
        return np.fromiter(
            (_NULL if value is None else _whole(value) for value in values), np.int64, count=len(values)
        )
    except (TypeError, ValueError, OverflowError):
        return None


def _whole(value: Any) -> int:
    number = int(value)
    if number != value:
        raise ValueError(f"{value!r} is not a whole number")
    return number


def _instants(values: list[Any]) -> np.ndarray:
    """Stored stamps as microseconds since the epoch (a naive one is UTC, as dlt stores them); `_NULL` for
    a null or for anything that is not a datetime (a driver that returns text), which is not kept."""
    return np.fromiter((_micros(value) for value in values), np.int64, count=len(values))


def _micros(value: Any) -> int:
    if not isinstance(value, datetime):
        return _NULL
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND
