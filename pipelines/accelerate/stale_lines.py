"""Removed lines on destinations that merge by key only (Delta tables on dlt's filesystem destination).

Elsewhere an invoice's lines merge on `invoice_id` (delete-insert): its old lines go, its current ones come.
Delta merges row by row on the primary key (upsert), so a line that is no longer there would stay. Knowing
which positions each invoice has stored, we send a tombstone (the `hard_delete` column set) for every
stored position the invoice no longer has, and the merge deletes exactly those rows.
"""

from __future__ import annotations

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.schema import Schema

from pipelines.accelerate.schema import LINE_TOMBSTONE
from pipelines.arrow_arrays import from_numpy
from pipelines.delta_tables import read_delta_table

_KEY = ["invoice_id", "line_position"]


class StoredLinePositions:
    """(invoice_id, line_position) of every line the destination holds, read once per run: two integers
    per line, about 80 MB at 5 million lines."""

    def __init__(self, keys: pa.Table) -> None:
        self._keys = keys

    @classmethod
    def read(cls, pipeline: dlt.Pipeline, extracting: Schema) -> StoredLinePositions:
        """None stored when the schema being extracted has no `invoice_line` table: the first run, or a
        full refresh that drops it (the stored rows are about to go, and the new table's first load is a
        plain write that would keep tombstones as rows)."""
        has_table = "invoice_line" in extracting.tables and extracting.tables["invoice_line"].get("columns")
        stored = read_delta_table(pipeline, "invoice_line", _KEY) if has_table else None
        if stored is None or stored.num_rows == 0 or not set(_KEY) <= set(stored.column_names):
            return cls(
                pa.table({"invoice_id": pa.array([], pa.int64()), "line_position": pa.array([], pa.int64())})
            )
        return cls(stored.select(_KEY).combine_chunks())

    def with_tombstones(self, lines: pa.Table) -> pa.Table:
        """`lines`, plus a tombstone for each stored line of the invoices in it that it no longer has.
        Invoices whose lines were not sent are not in `lines`, so their stored lines are left alone.

        The converter's own tombstones (one per invoice left with no lines, at position 0) are replaced:
        the first load into a new Delta table is a plain write that no hard-delete column filters."""
        sent_ids = pc.unique(lines["invoice_id"])
        lines = lines.filter(pc.is_null(lines[LINE_TOMBSTONE]))
        if self._keys.num_rows == 0 or len(sent_ids) == 0:
            return lines
        key_types = {name: lines.schema.field(name).type for name in _KEY}
        stored = self._keys.filter(pc.is_in(self._keys["invoice_id"].cast(key_types["invoice_id"]), sent_ids))
        if stored.num_rows == 0:
            return lines
        stored = pa.table({name: stored[name].cast(key_types[name]) for name in _KEY})
        current = lines.select(_KEY)
        stale = stored.join(current, keys=_KEY, join_type="left anti")
        if stale.num_rows == 0:
            return lines
        count = stale.num_rows
        columns = {
            field.name: (
                stale[field.name]
                if field.name in _KEY
                else from_numpy(np.ones(count, np.bool_)).cast(field.type)
                if field.name == LINE_TOMBSTONE
                else pa.nulls(count, field.type)
            )
            for field in lines.schema
        }
        tombstones = pa.table(columns, schema=lines.schema)
        return pa.concat_tables([lines, tombstones])
