"""The Accelerate source: invoices (and their lines) loaded incrementally on `last_update_date`.

How the incremental load works, and why it is not `dlt.sources.incremental`: Accelerate filters by day
(`/invoices/since/{date}/`) and commits can land late, stamped before the newest `last_update_date` we have
seen. dlt's incremental drops rows below its stored cursor; we must load every row the API returns. So the
resource keeps the cursor in its own dlt resource state (committed with the load that carried it), asks
for `cursor date - lookback_days`, loads everything it gets, and merges on `invoice_id`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any
from zoneinfo import ZoneInfo

import dlt
import numpy as np
import pyarrow as pa
from dlt.common.schema.typing import C_DLT_LOAD_ID
from dlt.sources import DltResource

from pipelines.accelerate import settings
from pipelines.accelerate.client import AccelerateClient
from pipelines.accelerate.config import AccelerateSettings, resolve_settings
from pipelines.accelerate.convert import BatchConverter
from pipelines.accelerate.first_load import appends
from pipelines.accelerate.memory import prefer_system_allocator, release_freed_memory
from pipelines.accelerate.reader import (
    Batch,
    fingerprints_of,
    held_in_memory,
    item_batches,
    joined,
    refilled,
    to_tables,
    without_items,
)
from pipelines.accelerate.repeated_ids import (
    STAGE_DATA_DEDUPLICATED,
    RepeatedIds,
    may_skip_deduplication,
    quiet_dedup_sort_warning,
)
from pipelines.accelerate.schema import invoice_columns, line_columns
from pipelines.accelerate.stale_lines import StoredLinePositions
from pipelines.accelerate.stored_versions import StoredVersions
from pipelines.arrow_arrays import latest_instant, repeated_string
from pipelines.collector import paused_collection
from pipelines.delta_tables import writes_delta_tables
from pipelines.duckdb_memory import cap_load_memory

__all__ = ["RunRead", "accelerate_source", "invoice", "next_since_date", "take_last_read"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRead:
    """What a run asked for and read: the day it asked from, and how many invoices it read, left out and
    loaded (`Progress.figures`)."""

    since_date: str
    figures: dict[str, int]


# The last run of each pipeline (by its working folder), for the job's summary. Not in dlt's state: every
# change of state is a load (a `_dlt_pipeline_state` row, a `_dlt_loads` row, a warehouse woken up), and
# these change at most runs, so a run that found nothing new still loaded; now it writes nothing.
_LAST_READ: dict[str, RunRead] = {}


def take_last_read(pipeline: dlt.Pipeline) -> RunRead | None:
    """What the pipeline's last run in this process asked for and read (None if none did). Taken: a
    second call gives None."""
    return _LAST_READ.pop(pipeline.working_dir, None)


def _sql_hints(deduplicated: bool, write_disposition: str = "merge") -> tuple[Any, Any]:
    """Invoice and line hints for SQL destinations; `deduplicated` tells dlt's merge whether it may insert
    the staged rows as they are (see repeated_ids.py). Appended (a backfill into empty tables:
    first_load.py), the columns go without the hints only a merge reads (`dedup_sort`, `hard_delete`),
    which dlt would warn of at every such load; the next run that loads rows, a merge, gives them back."""
    table_hints = {STAGE_DATA_DEDUPLICATED: deduplicated}
    invoice_hints = dlt.mark.make_hints(
        table_name="invoice",
        write_disposition=write_disposition,
        primary_key="invoice_id",
        columns=_for(write_disposition, invoice_columns()),
        additional_table_hints=table_hints,
    )
    # Lines merge on `invoice_id` (delete-insert): an updated invoice's old lines are all replaced by its
    # current ones, and a tombstone row deletes the lines of an invoice that has none left.
    line_hints = dlt.mark.make_hints(
        table_name="invoice_line",
        write_disposition=write_disposition,
        primary_key=["invoice_id", "line_position"],
        merge_key="invoice_id",
        columns=_for(write_disposition, line_columns()),
        additional_table_hints=table_hints,
    )
    return invoice_hints, line_hints


_MERGE_ONLY_HINTS = ("dedup_sort", "hard_delete")


def _for(write_disposition: str, columns: dict[str, Any]) -> dict[str, Any]:
    if write_disposition == "merge":
        return columns
    return {
        name: {hint: value for hint, value in column.items() if hint not in _MERGE_ONLY_HINTS}
        for name, column in columns.items()
    }


# Keyed by whether the staged rows hold each key once (no invoice repeated so far in the run).
SQL_HINTS = {deduplicated: _sql_hints(deduplicated) for deduplicated in (True, False)}
APPEND_HINTS = _sql_hints(deduplicated=True, write_disposition="append")
# Delta tables (the filesystem destination) merge by primary key only (upsert): no merge key; removed
# lines are deleted by per-line tombstones instead (see stale_lines.py).
DELTA_HINTS = (
    SQL_HINTS[False][0],
    dlt.mark.make_hints(
        table_name="invoice_line",
        write_disposition="merge",
        primary_key=["invoice_id", "line_position"],
        columns=line_columns(),
    ),
)


@dlt.source(name="accelerate", max_table_nesting=0)
def accelerate_source(
    api_key: str = dlt.secrets.value,
    subdomain: str | None = None,
    base_url: str | None = None,
    start_date: str | None = None,
    lookback_days: int | None = None,
    timezone: str | None = None,
) -> DltResource:
    """Accelerate invoices. Settings come from `sources.accelerate` (see CONTRACT.md and the README)."""
    resolved = resolve_settings(subdomain, base_url, start_date, lookback_days, timezone)
    client = AccelerateClient(resolved.base_url, api_key)
    return invoice(client, resolved)


@dlt.resource(name="invoice", primary_key="invoice_id", write_disposition="merge")
def invoice(client: AccelerateClient, config: AccelerateSettings) -> Iterator[Any]:
    """Yields arrow batches of invoices and of their lines, each with its table's hints.

    Both tables are declared per item (`create_table_variant`) because hints given in the decorator would
    also be copied onto the `invoice_line` variant.
    """
    state = dlt.current.resource_state()
    since = next_since_date(state.get(settings.STATE_CURSOR), config)
    converter = BatchConverter(config.timezone, state.setdefault(settings.STATE_FIELD_TYPES, {}))
    logger.info("accelerate: asking for invoices updated since %s", since)
    pipeline = dlt.current.pipeline()
    stored_lines = (
        StoredLinePositions.read(pipeline, dlt.current.source_schema())
        if writes_delta_tables(pipeline)
        else None
    )
    repeated = RepeatedIds()
    quiet_dedup_sort_warning()
    package = dlt.current.load_package_state()  # the package: its load id, and its state under "state"
    load_id = package["load_id"]
    appending = stored_lines is None and appends(pipeline, dlt.current.source_schema(), package["state"])
    cap_load_memory(pipeline.destination, capped=appending)  # a merge runs without it: duckdb_memory.py
    unique_when_staged = may_skip_deduplication(pipeline.destination)
    if appending:
        logger.info("accelerate: the destination holds no invoices yet: this load appends them")
    stored_versions = StoredVersions.read(
        pipeline, dlt.current.source_schema(), _first_instant(since, config)
    )
    progress = Progress(newest=_parse_cursor(state.get(settings.STATE_CURSOR)))
    asked_at = datetime.now(UTC)
    prefer_system_allocator()
    # Parsing builds millions of small acyclic objects, each batch freed by reference counting; the cyclic
    # collector would rescan them over and over (100k invoices parsed and converted in 10.8 s with it
    # paused, 15.6 s without).
    with paused_collection():
        try:
            with client.download_invoices_since(since) as body:
                changed = _new_versions(body, converter, stored_versions, progress)
                items = joined(changed, settings.ROWS_PER_ITEM, hold_small_tail=held_in_memory(body))
                for invoices, lines in items:
                    if stored_lines is None:
                        _note_repeats(repeated, invoices, pipeline)
                        if appending and not repeated.seen_repeat:  # tombstones: see duckdb_rerun.py
                            invoice_hints, line_hints = APPEND_HINTS
                        else:  # the last hints of a table decide for the whole load: a repeat merges all
                            invoice_hints, line_hints = SQL_HINTS[
                                unique_when_staged and not repeated.seen_repeat
                            ]
                    else:
                        lines = stored_lines.with_tombstones(lines)
                        invoice_hints, line_hints = DELTA_HINTS
                    invoices, lines = with_load_id(invoices, load_id), with_load_id(lines, load_id)
                    yield dlt.mark.with_hints(invoices, invoice_hints, create_table_variant=True)
                    yield dlt.mark.with_hints(lines, line_hints, create_table_variant=True)
        finally:
            client.close()
    release_freed_memory()
    progress.done(stored_versions.newest_left_out())
    newest = progress.newest
    _LAST_READ[pipeline.working_dir] = RunRead(since.isoformat(), progress.figures())
    for kept_before in settings.STATE_KEPT_BEFORE:  # see _LAST_READ
        state.pop(kept_before, None)
    if newest is not None and newest > asked_at:
        # A stamp in the future (a clock or time zone wrong at the source) would move the next `since` past
        # changes not made yet, and they would be missed. The invoice is loaded; the cursor stops at now.
        logger.warning("accelerate: last_update_date %s is in the future; the cursor stops at now", newest)
        newest = asked_at
    if newest is not None:
        state[settings.STATE_CURSOR] = newest.isoformat()


def _new_versions(
    body: IO[bytes], converter: BatchConverter, stored: StoredVersions, progress: Progress
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The invoices read (and their lines), less the versions the destination holds already, which are left
    out before arrow parses them (a body that is not a plain `{"items": [...]}` is parsed to dicts first,
    and only their conversion is saved), and less versions older than those (see stored_versions.py)."""
    for batch, fingerprints in refilled(_not_stored(body, converter, stored, progress), settings.BATCH_SIZE):
        for invoices, lines in to_tables(batch, converter, fingerprints):
            read = (invoices, lines.num_rows)
            invoices, lines = stored.keep_newer(invoices, lines)
            progress.add(*read, older=read[0].num_rows - invoices.num_rows)
            if invoices.num_rows:
                yield invoices, lines


def _not_stored(
    body: IO[bytes], converter: BatchConverter, stored: StoredVersions, progress: Progress
) -> Iterator[tuple[Batch, np.ndarray]]:
    """Each batch of the body less the versions stored already, with its items' fingerprints."""
    for batch in item_batches(body):
        fingerprints = fingerprints_of(batch, converter.timezone)
        left_out = stored.leave_out(fingerprints)
        progress.leave_out(int(left_out.sum()))
        if left_out.all():
            continue
        if left_out.any():
            batch, fingerprints = without_items(batch, left_out), fingerprints[~left_out]
        yield batch, fingerprints


class Progress:
    """Logs the first batch, then at most every PROGRESS_SECONDS, then the total: long backfills show life
    without flooding a scheduler's log."""

    def __init__(self, newest: datetime | None) -> None:
        self.invoices = self.lines = self.unchanged = self.older = 0
        self.newest = newest  # the newest last_update_date read so far (the cursor's next value)
        self._last_log: float | None = None
        self._logged = (-1, -1)

    def leave_out(self, invoices: int) -> None:
        """Invoices left out unparsed: read, and stored already as they are."""
        if invoices:
            self.invoices += invoices
            self.unchanged += invoices
            self._tick()

    def add(self, invoices: pa.Table, lines: int, older: int) -> None:
        """A parsed batch: its invoices and lines, of which `older` invoices were older than the version
        stored (and not loaded)."""
        self.newest = _later(self.newest, invoices)
        self.invoices += invoices.num_rows
        self.lines += lines
        self.older += older
        self._tick()

    def figures(self) -> dict[str, int]:
        return {
            "invoices_read": self.invoices,
            "lines_read": self.lines,
            "unchanged": self.unchanged,
            "older_than_stored": self.older,
        }

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last_log is None or now - self._last_log >= settings.PROGRESS_SECONDS:
            self._last_log = now
            self._log()

    def done(self, newest_left_out: datetime | None) -> None:
        if newest_left_out is not None and (self.newest is None or newest_left_out > self.newest):
            self.newest = newest_left_out
        if self._logged != (self.invoices, self.lines):
            self._log()

    def _log(self) -> None:
        self._logged = (self.invoices, self.lines)
        logger.info(
            "accelerate: %s invoices read, %s of them stored already as they are (left out unparsed); %s "
            "lines read with the others",
            f"{self.invoices:,}",
            f"{self.unchanged:,}",
            f"{self.lines:,}",
        )


def next_since_date(cursor: str | None, config: AccelerateSettings) -> date:
    """The `{date}` to ask for: start_date on the first run, else the cursor's local date minus the lookback."""
    newest = _parse_cursor(cursor)
    if newest is None:
        return config.start_date
    local_day = newest.astimezone(ZoneInfo(config.timezone)).date()
    return local_day - timedelta(days=config.lookback_days)


def _note_repeats(repeated: RepeatedIds, invoices: pa.Table, pipeline: dlt.Pipeline) -> None:
    """Record the ids; at the first repeat, say so and let the de-duplicating merge have its memory."""
    if repeated.seen_repeat:
        return
    repeated.add(invoices["invoice_id"])
    if repeated.seen_repeat:
        logger.info(
            "accelerate: an invoice came twice in this answer; the merge de-duplicates (newest "
            "last_update_date wins), without the DuckDB memory cap"
        )
        cap_load_memory(pipeline.destination, capped=False)


def with_load_id(table: pa.Table, load_id: str) -> pa.Table:
    """Every row says which load brought its version. dlt would add `_dlt_load_id` to arrow items itself
    (`normalize.parquet_normalizer.add_dlt_load_id`), but builds it with `pa.array`, which imports pandas
    where it is installed: 41 MB of memory the run never uses (see arrow_arrays.py)."""
    column = repeated_string(load_id, table.num_rows)
    return table.append_column(pa.field(C_DLT_LOAD_ID, pa.string(), nullable=False), column)


def _first_instant(since: date, config: AccelerateSettings) -> datetime:
    """The first moment the answer for `since` can hold: that day's midnight where Accelerate keeps time."""
    return datetime.combine(since, datetime.min.time(), ZoneInfo(config.timezone)).astimezone(UTC)


def _parse_cursor(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _later(current: datetime | None, invoices: pa.Table) -> datetime | None:
    if "last_update_date" not in invoices.column_names or invoices.num_rows == 0:
        return current
    batch_max = latest_instant(invoices["last_update_date"])
    if batch_max is None:
        return current
    return batch_max if current is None or batch_max > current else current
