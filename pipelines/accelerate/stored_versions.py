"""Which invoice versions the destination already holds, so a run loads only what changed.

A run asks for every invoice updated since the cursor's day less `lookback_days` (late commits land in the
past), so most of what it reads was loaded by the run before: all of it when nothing changed. Merging
those rows again is correct but costs as much as loading them anew. An invoice stored with the same
fingerprint (`fingerprint.py`: a hash of its bytes as sent, lines included) is the version already
stored, so it and its lines are left out. Read from the destination, not from state, and only rows of
loads dlt recorded as complete: what is stored is the truth, even after someone deleted rows by hand, and a
load that died half-way (its invoices merged, its lines not) is not taken for done.
"""

from __future__ import annotations

import logging
from datetime import datetime
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
from pipelines.destination_query import query_rows

logger = logging.getLogger(__name__)

_KEY, _STAMP, _LOAD_ID = "invoice_id", "last_update_date", C_DLT_LOAD_ID
# A null id or fingerprint becomes a value none has, so it matches nothing and its row is loaded.
_NULL = np.iinfo(np.int64).min
_SQL = (
    "SELECT {id}, {fingerprint} FROM {table} WHERE {stamp} >= %s AND {load_id} IN "
    "(SELECT {loads_load_id} FROM {loads} WHERE {loads_status} = 0)"
)


class StoredVersions:
    """(invoice_id, fingerprint) of the stored invoices updated since the run's first day, sorted by id:
    two integers an invoice, so 16 MB for a million of them."""

    def __init__(self, ids: np.ndarray, fingerprints: np.ndarray) -> None:
        self._ids = ids
        self._fingerprints = fingerprints

    @classmethod
    def none(cls) -> StoredVersions:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64))

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
            stored = query_rows(
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
        if not stored:
            return cls.none()
        ids = _integers([row[0] for row in stored])
        fingerprints = _integers([row[1] for row in stored])
        if ids is None or fingerprints is None:
            return cls.none()
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], fingerprints[order])

    def drop_unchanged(self, invoices: pa.Table, lines: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The invoices whose version is not stored yet, and their lines (tombstones included)."""
        if len(self._ids) == 0 or invoices.num_rows == 0:
            return invoices, lines
        ids = _as_integers(invoices[_KEY]) if _KEY in invoices.column_names else None
        fingerprints = _as_integers(invoices[FINGERPRINT]) if FINGERPRINT in invoices.column_names else None
        if ids is None or fingerprints is None:
            return invoices, lines
        at = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        unchanged = (self._ids[at] == ids) & (self._fingerprints[at] == fingerprints)
        # An invoice sent twice in one batch, once as stored and once not, goes whole to the merge, whose
        # dedup keeps the newest `last_update_date`: left out, the stored one would be replaced by the other.
        unchanged &= ~np.isin(ids, ids[~unchanged])
        if not unchanged.any():
            return invoices, lines
        invoices = invoices.filter(from_numpy(~unchanged))
        skipped = np.unique(ids[unchanged])
        if lines.num_rows and _KEY in lines.column_names:
            skipped_ids = from_numpy(skipped).cast(lines.schema.field(_KEY).type)
            lines = lines.filter(pc.invert(pc.is_in(lines[_KEY], value_set=skipped_ids)))
        return invoices, lines


def _as_integers(column: pa.ChunkedArray) -> np.ndarray | None:
    """Ids and fingerprints as int64, or None for a column that is not whole numbers. A null gets a value no
    id or fingerprint has, so it matches nothing and its row is loaded."""
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
