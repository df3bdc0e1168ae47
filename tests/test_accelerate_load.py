"""The Accelerate pipeline against the emulator: what the tables hold after each run and business day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import dlt
import pytest
from dlt.extract.concurrency import FuturesPool
from dlt.extract.extractors import ArrowExtractor

from pipelines.accelerate import settings as accelerate_settings
from pipelines.emulator import World
from pipelines.invoices import EXTRACT_POLL_SECONDS, EXTRACT_POLL_SETTING

from conftest import Harness


def test_first_load_equals_the_world(harness: Harness, world: World) -> None:
    summary = harness.run()
    harness.assert_equals_world(world)
    assert summary.rows["invoice"] == len(world.invoices)
    assert summary.since_date == "2000-01-01"


def test_tables_equal_the_world_after_each_business_day(harness: Harness, world: World) -> None:
    harness.run()
    for _ in range(3):
        changes = world.advance_day()
        harness.run()
        harness.assert_equals_world(world)
        for invoice_id in changes.paid:
            assert harness.invoices()[invoice_id]["paid_date"] is not None
        for invoice_id in changes.voided:
            assert harness.invoices()[invoice_id]["void_date"] is not None


def test_removed_line_disappears_after_next_run(harness: Harness, world: World) -> None:
    harness.run()
    changes = world.advance_day()
    harness.run()
    assert changes.lines_all_removed, "the emulator must remove every line of some invoice each day"
    stored = harness.lines()
    for invoice_id in changes.lines_all_removed:
        assert world.invoices[invoice_id]["invoice_lines"] == []
        assert not [key for key in stored if key[0] == invoice_id]
    for invoice_id in changes.lines_edited:
        current = len(world.invoices[invoice_id]["invoice_lines"])
        assert len([key for key in stored if key[0] == invoice_id]) == current


def test_new_field_becomes_a_new_column(harness: Harness, world: World) -> None:
    harness.run()
    known = {name for (name,) in harness.query(_COLUMNS)}
    world.advance_day()
    world.advance_day()
    harness.run()
    new = {name for (name,) in harness.query(_COLUMNS)} - known
    served = {name for invoice in world.invoices.values() for name in invoice} - known - {"invoice_lines"}
    assert served, "the emulator must introduce new fields over business days"
    assert served <= new
    harness.assert_equals_world(world)


def test_later_runs_ask_from_the_cursor_date_minus_lookback(harness: Harness, world: World) -> None:
    harness.run()
    newest = max(invoice["last_update_date"] for invoice in world.invoices.values())
    harness.server.reset_calls()
    summary = harness.run(lookback_days=2)
    expected_since = dt.date.fromisoformat(newest[:10]) - dt.timedelta(days=2)
    assert summary.since_date == expected_since.isoformat()
    assert harness.server.calls[("accelerate", "invoices_since", expected_since.isoformat())] == 1


def test_late_commit_stamped_before_the_cursor_is_loaded(harness: Harness, world: World) -> None:
    harness.run()
    cursor_before = harness.pipeline.state["sources"]["accelerate"]["resources"]["invoice"][
        "last_update_date"
    ]
    late_id = world.late_commit()
    late_stamp = world.invoices[late_id]["last_update_date"]
    harness.run(lookback_days=0)
    stored = harness.invoices()[late_id]
    assert stored["last_update_date"] < dt.datetime.fromisoformat(cursor_before)
    assert stored["last_update_date"].strftime("%H:%M:%S") == _utc_time_of(late_stamp)
    harness.assert_equals_world(world)


def test_rerun_with_nothing_changed_keeps_one_row_per_invoice(harness: Harness, world: World) -> None:
    harness.run()
    harness.run()
    harness.run()
    harness.assert_equals_world(world)
    assert harness.query("SELECT count(*) FROM billing.invoice") == [(len(world.invoices),)]
    duplicates = "SELECT count(*) FROM (SELECT invoice_id, line_position FROM billing.invoice_line GROUP BY ALL HAVING count(*) > 1)"
    assert harness.query(duplicates) == [(0,)]


def test_decimals_are_exact(harness: Harness, world: World) -> None:
    exact = world.add_invoice(
        paid_amount=Decimal("1234567890123.45"),
        net_amount=Decimal("0.10"),
        vat_rate=Decimal("20.00"),
        invoice_lines=[
            {
                "invoice_line_id": 990001,
                "quantity": Decimal("3.00"),
                "unit_price": Decimal("0.10"),
                "net_amount": Decimal("0.30"),
            }
        ],
    )
    harness.run()
    types = dict(harness.query(_COLUMNS_TYPES))
    assert types["paid_amount"] == "DECIMAL(38,9)"
    stored = harness.invoices()[exact["invoice_id"]]
    assert stored["paid_amount"] == Decimal("1234567890123.45")
    assert stored["net_amount"] == Decimal("0.10")
    line = harness.lines()[(exact["invoice_id"], 1)]
    assert line["quantity"] * line["unit_price"] == line["net_amount"] == Decimal("0.30")
    totals = harness.query(
        f"SELECT sum(net_amount) FROM billing.invoice_line WHERE invoice_id = {exact['invoice_id']}"
    )
    assert totals == [(Decimal("0.30"),)]


def test_timestamps_are_converted_from_london_summer_and_winter(harness: Harness, world: World) -> None:
    summer = world.add_invoice(creation_date="2024-07-01 09:00:00", last_update_date="2024-07-01 09:00:00")
    winter = world.add_invoice(creation_date="2024-01-15 09:00:00", last_update_date="2024-01-15 09:00:00")
    harness.run()
    stored = harness.invoices()
    assert stored[summer["invoice_id"]]["creation_date"] == dt.datetime(2024, 7, 1, 8, 0, tzinfo=dt.UTC)
    assert stored[winter["invoice_id"]]["creation_date"] == dt.datetime(2024, 1, 15, 9, 0, tzinfo=dt.UTC)
    types = dict(harness.query(_COLUMNS_TYPES))
    assert types["creation_date"] == types["last_update_date"] == "TIMESTAMP WITH TIME ZONE"
    assert types["tax_date"] == "DATE"


def test_timezone_setting_changes_the_conversion(harness: Harness, world: World) -> None:
    added = world.add_invoice(creation_date="2024-07-01 09:00:00", last_update_date="2024-07-01 09:00:00")
    harness.run(timezone="America/New_York")
    assert harness.invoices()[added["invoice_id"]]["creation_date"] == dt.datetime(
        2024, 7, 1, 13, 0, tzinfo=dt.UTC
    )


def test_full_refresh_reloads_from_start_date(harness: Harness, world: World) -> None:
    from pipelines.invoices import run_job

    harness.run()
    world.advance_day()
    summary = run_job(harness.pipeline, accelerate=harness.source(), full_refresh=True)
    assert summary.since_date == "2000-01-01"
    harness.assert_equals_world(world)


_COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_schema = 'billing' AND table_name = 'invoice'"
_COLUMNS_TYPES = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'billing' AND table_name = 'invoice'"
)


def _utc_time_of(local: str) -> str:
    from zoneinfo import ZoneInfo

    naive = dt.datetime.strptime(local, "%Y-%m-%d %H:%M:%S")
    return naive.replace(tzinfo=ZoneInfo("Europe/London")).astimezone(dt.UTC).strftime("%H:%M:%S")


def test_a_future_stamp_is_loaded_but_the_cursor_stops_at_now(harness: Harness, world: World) -> None:
    """A clock or time zone wrong at the source must not move the next `since` past changes not yet made."""
    future_id = next(iter(world.invoices))
    world.invoices[future_id]["last_update_date"] = "2099-01-01 00:00:00"
    before = dt.datetime.now(dt.UTC)
    harness.run()
    after = dt.datetime.now(dt.UTC)
    assert harness.invoices()[future_id]["last_update_date"].year == 2099
    cursor = dt.datetime.fromisoformat(
        harness.pipeline.state["sources"]["accelerate"]["resources"]["invoice"]["last_update_date"]
    )
    assert before <= cursor <= after
    harness.assert_equals_world(world)


def test_small_reads_joined_into_larger_items_load_the_world(
    harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accelerate_settings, "BATCH_SIZE", 7)
    monkeypatch.setattr(accelerate_settings, "ROWS_PER_ITEM", 40)
    harness.run()
    harness.assert_equals_world(world)
    for _ in range(3):  # new fields appear in later read batches of the same item
        world.advance_day()
        harness.run()
        harness.assert_equals_world(world)


def test_staged_rows_are_emptied_when_the_load_completes(harness: Harness, world: World) -> None:
    """On the job's DuckDB file the staging dataset is emptied when a run ends, so the file keeps no second
    copy of the rows merged (and the run's checkpoint never writes one)."""
    harness.run()
    world.advance_day()
    summary = harness.run()
    assert summary.rows["invoice"] > 0
    assert harness.query("SELECT count(*) FROM billing_staging.invoice") == [(0,)]
    assert harness.query("SELECT count(*) FROM billing_staging.invoice_line") == [(0,)]
    harness.assert_equals_world(world)


@pytest.mark.parametrize(("read_into_memory", "items"), [(True, 1), (False, 2)])
def test_a_small_last_item_goes_to_dlt_with_the_one_before_when_the_body_is_in_memory(
    harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch, read_into_memory: bool, items: int
) -> None:
    """150 invoices in items of 140: the last 10 join the first where the body is read into memory, and go
    as an item of their own where it is streamed (whose items are never held)."""
    monkeypatch.setattr(accelerate_settings, "BATCH_SIZE", 7)
    monkeypatch.setattr(accelerate_settings, "ROWS_PER_ITEM", 140)
    if not read_into_memory:
        monkeypatch.setattr(accelerate_settings, "IN_MEMORY_BODY_BYTES", -1)
    handed: list[tuple[str, int]] = []  # (table, rows) of each item dlt is given
    write_items = ArrowExtractor.write_items

    def counted(self: ArrowExtractor, resource: Any, table: Any, meta: Any) -> None:
        handed.append((meta.hints["table_name"], table.num_rows))
        write_items(self, resource, table, meta)

    monkeypatch.setattr(ArrowExtractor, "write_items", counted)  # dlt's, observed
    harness.run()
    invoice_items = [rows for table, rows in handed if table == "invoice"]
    assert invoice_items == ([150] if read_into_memory else [140, 10])
    assert [table for table, _ in handed].count("invoice_line") == items
    harness.assert_equals_world(world)


def test_an_extract_ends_with_a_short_poll_unless_the_user_set_one(
    harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt naps one poll interval when the last resource is exhausted: the job's interval, not dlt's 10 ms
    default, and the user's own if they set one before the pipeline is made."""
    naps: list[float] = []
    nap = FuturesPool.sleep

    def recorded(pool: FuturesPool) -> None:
        naps.append(pool.poll_interval)
        nap(pool)

    monkeypatch.setattr(FuturesPool, "sleep", recorded)
    harness.run()
    harness.assert_equals_world(world)
    assert naps and set(naps) == {EXTRACT_POLL_SECONDS}

    naps.clear()
    previous = dlt.config.get(EXTRACT_POLL_SETTING)
    dlt.config[EXTRACT_POLL_SETTING] = 0.02  # as a config.toml or the user's code would
    try:
        users = Harness(harness.folder / "users", harness.server)
        users.run()
        users.assert_equals_world(world)
    finally:
        dlt.config[EXTRACT_POLL_SETTING] = previous
    assert naps and set(naps) == {0.02}
