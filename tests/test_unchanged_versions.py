"""A run loads only what changed: invoices it reads again (the lookback window) whose version the
destination already holds are left out, and anything the destination lacks is loaded, whatever the reason."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal

import duckdb
import pytest

from pipelines.accelerate import next_since_date
from pipelines.accelerate.config import resolve_settings
from pipelines.emulator import World
from pipelines.emulator.server import items_body
from pipelines.invoices import run_job

from conftest import Harness


def load_ids(harness: Harness) -> set[str]:
    return {
        load_id
        for table in ("invoice", "invoice_line")
        for (load_id,) in harness.query(f"SELECT DISTINCT _dlt_load_id FROM billing.{table}")
    }


def test_a_rerun_with_nothing_changed_loads_nothing_again(harness: Harness, world: World) -> None:
    harness.run()
    first_load = load_ids(harness)
    summary = harness.run()
    read = summary.accelerate_read
    assert read["invoices_read"] > 0, "the lookback window must hold invoices for this test to mean anything"
    assert read["unchanged"] == read["invoices_read"]
    assert summary.rows == {}
    assert load_ids(harness) == first_load, "no stored row was written again"
    assert any("were left out" in line for line in summary.lines())
    harness.assert_equals_world(world)


def test_a_business_day_loads_exactly_the_invoices_it_changed(harness: Harness, world: World) -> None:
    harness.run()
    for _ in range(2):
        changes = world.advance_day()
        summary = harness.run()
        read = summary.accelerate_read
        changed = set(changes.invoices_changed)
        assert read["invoices_read"] > len(changed), "the window re-reads invoices that did not change"
        assert read["invoices_read"] - read["unchanged"] == len(changed)
        assert summary.rows["invoice"] == len(changed)
        newest_load = max(load_ids(harness))
        reloaded = {
            invoice_id
            for (invoice_id,) in harness.query(
                f"SELECT invoice_id FROM billing.invoice WHERE _dlt_load_id = '{newest_load}'"
            )
        }
        assert reloaded == changed
        harness.assert_equals_world(world)


def test_rows_deleted_from_the_destination_are_loaded_again(harness: Harness, world: World) -> None:
    harness.run()
    in_window = sorted(world.invoices, key=lambda invoice_id: world.invoices[invoice_id]["last_update_date"])[
        -3:
    ]
    ids = ", ".join(str(invoice_id) for invoice_id in in_window)
    with duckdb.connect(str(harness.database)) as connection:
        connection.execute(f"DELETE FROM billing.invoice WHERE invoice_id IN ({ids})")
        connection.execute(f"DELETE FROM billing.invoice_line WHERE invoice_id IN ({ids})")
    summary = harness.run()
    assert summary.rows["invoice"] == len(in_window)
    harness.assert_equals_world(world)


def test_a_full_refresh_reloads_everything(harness: Harness, world: World) -> None:
    harness.run()
    world.advance_day()
    assert harness.run().rows["invoice"] < len(world.invoices)
    refreshed = run_job(harness.pipeline, accelerate=harness.source(), only="accelerate", full_refresh=True)
    assert refreshed.rows["invoice"] == len(world.invoices)
    assert refreshed.accelerate_read["unchanged"] == 0
    harness.assert_equals_world(world)


def test_an_invoice_changed_without_a_new_stamp_is_loaded(harness: Harness, world: World) -> None:
    harness.run()
    newest = max(world.invoices, key=lambda invoice_id: world.invoices[invoice_id]["last_update_date"])
    world.invoices[newest]["payer_display_name"] = "renamed in the same second"
    world.invoices[newest]["invoice_lines"] = world.invoices[newest]["invoice_lines"][:1]
    world.mark_changed()
    summary = harness.run()
    assert summary.rows["invoice"] == 1
    assert harness.invoices()[newest]["payer_display_name"] == "renamed in the same second"
    harness.assert_equals_world(world)


def test_rows_of_a_load_dlt_never_recorded_as_complete_are_loaded_again(
    harness: Harness, world: World
) -> None:
    harness.run()
    with duckdb.connect(str(harness.database)) as connection:
        connection.execute("DELETE FROM billing._dlt_loads")  # as if the package had died before the end
    summary = harness.run()
    read = summary.accelerate_read
    assert read["invoices_read"] > 0 and read["unchanged"] == 0
    assert summary.rows["invoice"] == read["invoices_read"]
    harness.assert_equals_world(world)


def general_outline(invoices: list[dict]) -> bytes:
    """The same items with another top-level key, which the splitter leaves to the general parser."""
    return b'{"count":' + str(len(invoices)).encode() + b"," + items_body(invoices)[1:]


@pytest.mark.parametrize("outline", ["split and read by arrow", "read by the general parser"])
def test_a_line_changed_without_a_new_stamp_is_loaded(harness: Harness, world: World, outline: str) -> None:
    def serve(since: dt.date) -> None:
        if outline == "read by the general parser":
            harness.server.inject_body(general_outline(world.invoices_since(since)), api="accelerate")

    serve(dt.date(2000, 1, 1))
    harness.run()
    cursor = harness.pipeline.state["sources"]["accelerate"]["resources"]["invoice"]["last_update_date"]
    settings = resolve_settings(None, harness.server.accelerate_base_url, None, None, None)
    newest = max(world.invoices, key=lambda invoice_id: world.invoices[invoice_id]["last_update_date"])
    world.invoices[newest]["invoice_lines"][0]["description"] = "edited in the same second"
    world.mark_changed()
    serve(next_since_date(cursor, settings))
    summary = harness.run()
    assert summary.rows == {"invoice": 1, "invoice_line": len(world.invoices[newest]["invoice_lines"])}
    harness.assert_equals_world(world)


def test_an_invoice_sent_twice_keeps_its_newest_version(harness: Harness, world: World) -> None:
    everything = copy.deepcopy(world.invoices_since(dt.date(2000, 1, 1)))
    older = everything[-1]
    newer = copy.deepcopy(older)
    newer["paid_amount"] = Decimal("4321.00")
    stamp = dt.datetime.fromisoformat(older["last_update_date"]) + dt.timedelta(seconds=1)
    newer["last_update_date"] = stamp.strftime("%Y-%m-%d %H:%M:%S")
    harness.server.inject_body(items_body([*everything[:-1], newer]), api="accelerate")
    harness.run()
    # the destination holds the newer version; an answer listing both must not put the older one back
    harness.server.inject_body(items_body([*everything[:-1], older, newer]), api="accelerate")
    harness.run()
    assert harness.invoices()[newer["invoice_id"]]["paid_amount"] == Decimal("4321.00")
