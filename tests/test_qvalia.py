"""Qvalia statuses and their history against the emulator, and Create from Order done at most once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest

from pipelines.emulator import World
from pipelines.errors import AuthenticationError
from pipelines.http import Throttle
from pipelines.qvalia import make_client
from pipelines.qvalia.orders import create_invoices_from_orders

from conftest import Harness


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.05")


def sales_ids(world: World) -> set[str]:
    return {str(i) for i, invoice in world.invoices.items() if invoice["invoice_type"] == "Sales"}


def purchase_ids(world: World) -> set[str]:
    return {str(i) for i, invoice in world.invoices.items() if invoice["invoice_type"] != "Sales"}


def expected_statuses(world: World) -> dict[str, dict[str, Any]]:
    known = {i: world.qvalia_status(i) for i in sales_ids(world)}
    return {i: status for i, status in known.items() if status is not None}


def as_stored(status: dict[str, Any]) -> dict[str, Any]:
    stored = dict(status)
    for name in ("sent_at", "paid_at", "cancelled_at"):
        if stored[name] is not None:
            stored[name] = dt.datetime.fromisoformat(stored[name]).astimezone(dt.UTC)
    return stored


def assert_statuses_equal_world(harness: Harness, world: World) -> None:
    rows = {row["integration_id"]: row for row in harness.rows("invoice_status")}
    expected = expected_statuses(world)
    assert sorted(rows) == sorted(expected)
    for integration_id, status in expected.items():
        stored = {name: rows[integration_id][name] for name in status}
        assert stored == as_stored(status), integration_id
        assert rows[integration_id]["checked_at"].tzinfo is not None


def status_calls(harness: Harness) -> dict[str, int]:
    return {key[2]: count for key, count in harness.server.calls.items() if key[:2] == ("qvalia", "status")}


def test_statuses_equal_the_emulator_after_each_business_day(harness: Harness, world: World) -> None:
    harness.run_both()
    assert_statuses_equal_world(harness, world)
    moved_alone = set()
    for _ in range(3):
        changes = world.advance_day()
        moved_alone |= set(changes.qvalia_status_changed)
        harness.run_both()
        assert_statuses_equal_world(harness, world)
    assert moved_alone, "the emulator must move statuses with no Accelerate change"


def test_purchase_invoices_are_never_polled(harness: Harness, world: World) -> None:
    harness.run_both()
    world.advance_day()
    harness.run_both()
    polled = set(status_calls(harness))
    assert polled and polled <= sales_ids(world)
    assert not polled & purchase_ids(world)


def test_final_statuses_are_not_polled_again_unless_asked(harness: Harness, world: World) -> None:
    harness.run_both()
    final = {i for i, s in expected_statuses(world).items() if s["status"] in ("paid", "cancelled")}
    assert final
    harness.server.reset_calls()
    summary = harness.run_both()
    assert not set(status_calls(harness)) & final
    assert summary.qvalia["final_skipped"] == len(final)
    harness.server.reset_calls()
    harness.run_both(poll_final=True)
    assert final <= set(status_calls(harness))


def test_calls_per_run_grow_with_open_invoices_not_history(harness: Harness, world: World) -> None:
    harness.run_both()
    open_sales = sales_ids(world) - {
        i for i, s in expected_statuses(world).items() if s["status"] in ("paid", "cancelled")
    }
    harness.server.reset_calls()
    summary = harness.run_both()
    assert harness.server.call_count(api="qvalia") == len(open_sales) == summary.qvalia["polled"]


def test_history_rows_only_on_change(harness: Harness, world: World) -> None:
    harness.run_both()
    first = harness.query("SELECT count(*) FROM billing.invoice_status_history")[0][0]
    assert first == len(expected_statuses(world)), "the first observation of each status counts"
    harness.run_both()
    harness.run_both()
    assert harness.query("SELECT count(*) FROM billing.invoice_status_history")[0][0] == first
    before = expected_statuses(world)
    world.advance_day()
    summary = harness.run_both()
    after = expected_statuses(world)
    changed = {i for i in after if before.get(i) != after[i]}
    history = harness.query("SELECT count(*) FROM billing.invoice_status_history")[0][0]
    assert history == first + len(changed) == first + summary.qvalia["changed"]
    duplicated = harness.query(
        "SELECT count(*) FROM (SELECT integration_id, status FROM billing.invoice_status_history "
        "GROUP BY ALL HAVING count(*) > 1)"
    )
    assert duplicated == [(0,)]


def test_ids_unknown_to_qvalia_are_counted_and_polled_again(harness: Harness, world: World) -> None:
    summary = harness.run_both()
    unknown = sales_ids(world) - set(expected_statuses(world))
    assert unknown and summary.qvalia["unknown"] == len(unknown)
    harness.server.reset_calls()
    harness.run_both()
    assert unknown <= set(status_calls(harness))
    assert "not known to Qvalia yet" in "\n".join(summary.lines())


def test_429_retry_after_is_honoured_and_the_run_converges(harness: Harness, world: World) -> None:
    harness.run()
    harness.server.faults.retry_after_s = 1
    harness.server.inject("429", times=3, api="qvalia")
    harness.server.inject("503", times=2, api="qvalia")
    started = time.monotonic()
    summary = run_qvalia_only(harness)
    assert time.monotonic() - started >= 1.0
    assert summary.qvalia["failed"] == 0 and summary.qvalia["retries"] >= 5
    assert_statuses_equal_world(harness, world)


def run_qvalia_only(harness: Harness, **settings: Any) -> Any:
    from pipelines.invoices import run_job

    return run_job(harness.pipeline, qvalia=harness.qvalia(**settings), only="qvalia")


def test_throttle_pauses_every_worker() -> None:
    throttle = Throttle()
    throttle.pause(0.3)
    finished: list[float] = []
    started = time.monotonic()

    def worker() -> None:
        throttle.wait()
        finished.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(finished) == 4 and min(finished) >= 0.29


def test_wrong_key_and_wrong_account_fail_with_one_line(harness: Harness) -> None:
    harness.run()
    with pytest.raises(AuthenticationError) as raised:
        run_qvalia_only(harness, api_key="wrong-SECRET-qv-key")
    assert "sources.qvalia.api_key" in str(raised.value) and "SECRET" not in str(raised.value)
    with pytest.raises(AuthenticationError) as raised:
        run_qvalia_only(harness, account_reg_no="0000000000")
    assert "sources.qvalia.account_reg_no" in str(raised.value)


def test_path_parameters_cannot_escape_their_segment(harness: Harness) -> None:
    client = make_client(
        harness.server.qvalia_api_key, harness.server.account_reg_no, base_url=harness.server.qvalia_base_url
    )
    for hostile in ("../../../qvine/quotevine/api/v2/invoices/since/2000-01-01", "..", "a/b", "x?y#z"):
        assert client.get_status(hostile) is None
        assert harness.server.calls[("qvalia", "status", hostile)] == 1
    assert harness.server.call_count(api="accelerate") == 0
    assert harness.server.call_count(api="unknown") == 0


def orders_client(harness: Harness) -> Any:
    return make_client(
        harness.server.qvalia_api_key, harness.server.account_reg_no, base_url=harness.server.qvalia_base_url
    )


def test_create_from_order_twice_creates_once(harness: Harness, world: World) -> None:
    order_id = sorted(world.orders)[0]
    first = create_invoices_from_orders(harness.pipeline, orders_client(harness), [order_id], "peppol")
    second = create_invoices_from_orders(
        harness.pipeline, orders_client(harness), [order_id, order_id], "peppol"
    )
    assert [o.result for o in first] == ["created"]
    assert [o.result for o in second] == ["skipped"]
    assert world.creations[order_id] == 1
    recorded = harness.rows("invoice_from_order")
    assert [(r["integration_id"], r["state"], r["send_method"]) for r in recorded] == [
        (order_id, "created", "peppol")
    ]
    assert recorded[0]["invoice"] and recorded[0]["created_at"].tzinfo is not None and recorded[0]["message"]


def test_unknown_order_is_reported_and_the_others_are_created(harness: Harness, world: World) -> None:
    good = sorted(world.orders)[:2]
    outcomes = create_invoices_from_orders(
        harness.pipeline, orders_client(harness), [good[0], "ORD-NOPE", good[1]], "email"
    )
    by_id = {o.integration_id: o for o in outcomes}
    assert by_id["ORD-NOPE"].result == "failed" and "does not know order ORD-NOPE" in by_id["ORD-NOPE"].detail
    assert by_id[good[0]].result == by_id[good[1]].result == "created"
    assert all(world.creations[i] == 1 for i in good)


def test_a_crash_between_creation_and_record_does_not_double_create(harness: Harness, world: World) -> None:
    order_id = sorted(world.orders)[1]
    from pipelines.qvalia.orders import _load, _record

    _load(harness.pipeline, [_record(order_id, "peppol", "requested", None)])
    orders_client(harness).create_invoice_from_order(order_id, "peppol")  # the call; the process dies here
    outcomes = create_invoices_from_orders(harness.pipeline, orders_client(harness), [order_id], "peppol")
    assert outcomes[0].result == "skipped" and "interrupted" in outcomes[0].detail
    assert world.creations[order_id] == 1
    assert [(r["integration_id"], r["state"]) for r in harness.rows("invoice_from_order")] == [
        (order_id, "created")
    ]


def test_an_order_invoiced_elsewhere_is_skipped_not_recreated(harness: Harness, world: World) -> None:
    order_id = sorted(world.orders)[2]
    orders_client(harness).create_invoice_from_order(order_id, "print")
    outcomes = create_invoices_from_orders(harness.pipeline, orders_client(harness), [order_id], "print")
    assert outcomes[0].result == "skipped" and "already has an outgoing invoice" in outcomes[0].detail
    assert world.creations[order_id] == 1
