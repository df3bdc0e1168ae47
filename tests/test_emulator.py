"""The emulator against the two API documents: real HTTP to a server on a free port, the world as truth."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import requests

from pipelines.emulator import EmulatorServer, Faults, World
from pipelines.emulator import server as emulator_server

INVOICE_FIELDS = [
    # the seed's example response, in its order
    "invoice_id",
    "invoice_type",
    "credit_invoice_id",
    "external_reference",
    "contract_id",
    "asset_id",
    "payer_display_name",
    "payer_property",
    "payer_street",
    "payer_locality",
    "payer_town_city",
    "payer_postcode",
    "tax_date",
    "due_date",
    "sent_date",
    "sent_by",
    "paid_date",
    "paid_by",
    "void_date",
    "void_by",
    "paid_amount",
    "payable_sort_code",
    "payable_account_number",
    "creation_date",
    "created_by",
    "last_update_date",
    "last_updated_by",
    "invoice_lines",
    # the seed's attribute list
    "net_amount",
    "quote_id",
    "type",
    "invoice_date",
    "invoiced_by",
    "description",
    "reference",
    "payment_reference",
    "vat_rate",
    "ipt_rate",
]
LINE_FIELDS = [
    "invoice_line_id",
    "description",
    "quantity",
    "unit_price",
    "net_amount",
    "vat_rate",
    "vat_amount",
    "gross_amount",
]
STATUS_FIELDS = [
    "document_id",
    "order_number",
    "payment_reference",
    "credit_note",
    "reminder",
    "status",
    "sent_at",
    "paid_at",
    "cancelled_at",
    "send_method",
]
DATE_FIELDS = ("tax_date", "due_date", "sent_date", "paid_date", "void_date", "invoice_date")
MONEY_FIELDS = ("net_amount", "vat_rate")
CENT = Decimal("0.01")


@pytest.fixture
def world() -> World:
    return World(seed=2, invoices=120)


@pytest.fixture
def server(world: World) -> Iterator[EmulatorServer]:
    with EmulatorServer(world) as running:
        yield running


def since(server: EmulatorServer, day: str, key: str | None = None, timeout: float = 10) -> requests.Response:
    headers = {"api-key": server.accelerate_api_key if key is None else key}
    return requests.get(
        f"{server.accelerate_base_url}/invoices/since/{day}/", headers=headers, timeout=timeout
    )


def status(
    server: EmulatorServer,
    integration_id: str,
    key: str | None = None,
    account: str | None = None,
    body: Any = None,
) -> requests.Response:
    account = server.account_reg_no if account is None else account
    url = f"{server.qvalia_base_url}/account/{account}/action/invoice/outgoing/status/{integration_id}"
    headers = {"Authorization": server.qvalia_api_key if key is None else key}
    return requests.post(url, json={} if body is None else body, headers=headers, timeout=10)


def create(server: EmulatorServer, order_id: str, body: Any) -> requests.Response:
    url = f"{server.qvalia_base_url}/account/{server.account_reg_no}/action/invoice/createandsend/{order_id}"
    return requests.post(url, json=body, headers={"Authorization": server.qvalia_api_key}, timeout=10)


def items(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)["items"]


# ---- the world ---------------------------------------------------------------------------------------------


def test_every_invoice_has_the_documented_fields_in_api_shape(world: World) -> None:
    for invoice in world.invoices.values():
        assert list(invoice) == INVOICE_FIELDS
        assert invoice["invoice_type"] in ("Sales", "Purchase")
        assert invoice["creation_date"] <= invoice["last_update_date"]
        dt.datetime.strptime(invoice["last_update_date"], "%Y-%m-%d %H:%M:%S")
        for name in DATE_FIELDS:
            assert invoice[name] is None or dt.date.fromisoformat(invoice[name])
        for line in invoice["invoice_lines"]:
            assert list(line) == LINE_FIELDS
            assert line["net_amount"] == (line["quantity"] * line["unit_price"]).quantize(CENT, ROUND_HALF_UP)
            assert line["gross_amount"] == line["net_amount"] + line["vat_amount"]
        assert invoice["net_amount"] == sum(
            (line["net_amount"] for line in invoice["invoice_lines"]), Decimal(0)
        )
        if invoice["paid_date"] is None:
            assert invoice["paid_amount"] == 0
        else:
            gross = sum((line["gross_amount"] for line in invoice["invoice_lines"]), Decimal("0.00"))
            assert invoice["paid_amount"] == gross
    assert min(world.invoices) == 100_000
    assert any(len(invoice["invoice_lines"]) == 0 for invoice in world.invoices.values())


def test_money_is_two_decimal_places_and_never_float(world: World) -> None:
    for invoice in world.invoices.values():
        for name in MONEY_FIELDS:
            assert isinstance(invoice[name], Decimal) and invoice[name].as_tuple().exponent == -2
        for line in invoice["invoice_lines"]:
            for name in LINE_FIELDS[2:]:
                assert isinstance(line[name], Decimal) and line[name].as_tuple().exponent == -2


def test_history_is_in_british_summer_time_before_today(world: World) -> None:
    stamps = sorted(invoice["creation_date"] for invoice in world.invoices.values())
    assert stamps[0][:10] >= "2024-06-26" and stamps[-1][:10] <= "2024-10-24"
    assert world.today == dt.date(2024, 10, 24)
    assert any(invoice["invoice_type"] == "Sales" for invoice in world.invoices.values())
    assert any(invoice["invoice_type"] == "Purchase" for invoice in world.invoices.values())


def test_same_seed_builds_the_same_world_and_another_seed_does_not() -> None:
    assert World(seed=9, invoices=50).invoices == World(seed=9, invoices=50).invoices
    assert World(seed=9, invoices=50).invoices != World(seed=10, invoices=50).invoices


def test_lines_per_invoice_fixes_the_line_count() -> None:
    world = World(seed=1, invoices=30, lines_per_invoice=3)
    assert {len(invoice["invoice_lines"]) for invoice in world.invoices.values()} == {3}
    line_ids = [
        line["invoice_line_id"] for invoice in world.invoices.values() for line in invoice["invoice_lines"]
    ]
    assert len(line_ids) == len(set(line_ids)) == 90


def test_invoices_since_compares_the_local_date_and_orders_by_id(world: World) -> None:
    before = world.add_invoice(creation_date="2024-09-30 23:59:59")
    on = world.add_invoice(creation_date="2024-10-01 00:00:00")
    chosen = world.invoices_since(dt.date(2024, 10, 1))
    ids = [invoice["invoice_id"] for invoice in chosen]
    assert ids == sorted(ids)
    assert on["invoice_id"] in ids and before["invoice_id"] not in ids
    assert all(invoice["last_update_date"] >= "2024-10-01" for invoice in chosen)


def test_add_invoice_keeps_the_given_timestamps_and_values(world: World) -> None:
    summer = world.add_invoice(
        creation_date="2024-07-01 09:00:00",
        last_update_date="2024-07-01 09:00:00",
        invoice_type="Sales",
        sent_date="2024-07-01",
    )
    winter = world.add_invoice(
        last_update_date="2024-01-15 09:00:00", paid_amount=Decimal("1234567890123.45")
    )
    assert summer["last_update_date"] == "2024-07-01 09:00:00"
    assert winter["creation_date"] == winter["last_update_date"] == "2024-01-15 09:00:00"
    assert winter["paid_amount"] == Decimal("1234567890123.45")
    assert world.invoices[winter["invoice_id"]] is winter
    assert winter["invoice_id"] == summer["invoice_id"] + 1
    assert world.qvalia_status(str(summer["invoice_id"]))["sent_at"] == "2024-07-01T09:00:00+01:00"


def test_advance_day_makes_every_kind_of_change_during_working_hours(world: World) -> None:
    before = {invoice_id: json.dumps(invoice, default=str) for invoice_id, invoice in world.invoices.items()}
    changes = world.advance_day()
    assert changes.day == world.today == dt.date(2024, 10, 25)
    for kind in ("paid", "voided", "lines_edited", "lines_all_removed", "created", "qvalia_status_changed"):
        assert getattr(changes, kind), kind
    for invoice_id in changes.paid:
        invoice = world.invoices[invoice_id]
        assert invoice["paid_date"] == "2024-10-25" and invoice["paid_by"]
        assert invoice["paid_amount"] == sum(
            (line["gross_amount"] for line in invoice["invoice_lines"]), Decimal(0)
        )
    for invoice_id in changes.voided:
        assert world.invoices[invoice_id]["void_date"] == "2024-10-25"
    for invoice_id in changes.lines_all_removed:
        assert world.invoices[invoice_id]["invoice_lines"] == []
        assert world.invoices[invoice_id]["net_amount"] == Decimal("0.00")
    for invoice_id in changes.created:
        assert invoice_id not in before
    for invoice_id in changes.invoices_changed:
        invoice = world.invoices[invoice_id]
        assert "2024-10-25 09:00:00" <= invoice["last_update_date"] <= "2024-10-25 17:30:00"
        assert invoice["currency_code"] == "GBP"
    untouched = [invoice_id for invoice_id in before if invoice_id not in changes.invoices_changed]
    assert all(json.dumps(world.invoices[i], default=str) == before[i] for i in untouched)
    assert world.invoices_since(dt.date(2024, 10, 25)) == [
        world.invoices[i] for i in changes.invoices_changed
    ]
    present = {
        line["invoice_line_id"] for invoice in world.invoices.values() for line in invoice["invoice_lines"]
    }
    assert not present & set(changes.removed_line_ids) and set(changes.added_line_ids) <= present
    assert changes.new_fields == {"currency_code": "GBP"}
    assert "currency_code" in changes.describe()


def test_a_second_business_day_adds_another_new_field_and_skips_the_weekend(world: World) -> None:
    world.advance_day()
    changes = world.advance_day()
    assert changes.day == dt.date(2024, 10, 28)
    assert changes.new_fields == {"payment_terms_days": 30}
    for invoice_id in changes.invoices_changed:
        assert world.invoices[invoice_id]["payment_terms_days"] == 30
        assert world.invoices[invoice_id]["currency_code"] == "GBP"


def test_qvalia_statuses_move_without_an_accelerate_change(world: World) -> None:
    friday = world.advance_day()
    assert friday.qvalia_status_changed
    for integration_id in friday.qvalia_status_changed:
        assert not integration_id.isdigit() or int(integration_id) not in friday.invoices_changed
        assert world.qvalia_status(integration_id) is not None


def test_qvalia_timestamps_carry_the_london_offset_across_the_dst_change(world: World) -> None:
    world.advance_day()  # Friday 25 October, British Summer Time
    world.advance_day()  # Monday 28 October, Greenwich Mean Time
    stamps = [
        stamp
        for value in world.qvalia_statuses.values()
        for stamp in (value["sent_at"], value["paid_at"], value["cancelled_at"])
        if stamp is not None
    ]
    summer = [stamp for stamp in stamps if stamp.startswith("2024-10-25")]
    winter = [stamp for stamp in stamps if stamp.startswith("2024-10-28")]
    assert summer and all(stamp.endswith("+01:00") for stamp in summer)
    assert winter and all(stamp.endswith("+00:00") for stamp in winter)
    assert all(dt.datetime.fromisoformat(stamp).tzinfo is not None for stamp in stamps)


def test_final_qvalia_statuses_never_change(world: World) -> None:
    final = {
        key: dict(value)
        for key, value in world.qvalia_statuses.items()
        if value["status"] in ("paid", "cancelled")
    }
    assert final
    for _ in range(4):
        world.advance_day()
    assert {key: world.qvalia_statuses[key] for key in final} == final


def test_purchase_invoices_never_have_a_qvalia_status(world: World) -> None:
    for _ in range(3):
        world.advance_day()
    for invoice_id, invoice in world.invoices.items():
        if invoice["invoice_type"] == "Purchase":
            assert world.qvalia_status(str(invoice_id)) is None
        if invoice["sent_date"] is None:
            assert world.qvalia_status(str(invoice_id)) is None


def test_most_sent_sales_invoices_are_known_to_qvalia_and_some_are_not() -> None:
    world = World(seed=4, invoices=1000)
    sent = [str(i) for i, invoice in world.invoices.items() if invoice["sent_date"] is not None]
    known = [integration_id for integration_id in sent if integration_id in world.qvalia_statuses]
    assert 0.7 < len(known) / len(sent) < 0.9
    assert {status["status"] for status in world.qvalia_statuses.values()} == {
        "sent",
        "delivered",
        "paid",
        "cancelled",
    }
    assert {status["send_method"] for status in world.qvalia_statuses.values()} == {
        "peppol",
        "email",
        "print",
    }


def test_late_commit_is_stamped_before_the_newest_change_on_the_same_date(world: World) -> None:
    world.advance_day()
    newest = world.max_last_update_date
    late_id = world.late_commit()
    stamp = world.invoices[late_id]["last_update_date"]
    assert stamp < newest and stamp[:10] == newest[:10]
    assert world.max_last_update_date == newest
    assert world.invoices[late_id]["reference"] == f"LATE-{late_id}"
    assert world.invoices[late_id]["currency_code"] == "GBP"


# ---- Accelerate over HTTP ----------------------------------------------------------------------------------


def test_since_serves_exactly_the_worlds_invoices_for_that_date(server: EmulatorServer, world: World) -> None:
    response = since(server, "2024-10-01")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    served = items(response)
    assert [invoice["invoice_id"] for invoice in served] == [
        invoice["invoice_id"] for invoice in world.invoices_since(dt.date(2024, 10, 1))
    ]
    assert served == world.invoices_since(dt.date(2024, 10, 1))


def test_since_includes_the_boundary_date_from_midnight(server: EmulatorServer, world: World) -> None:
    late = world.add_invoice(last_update_date="2024-10-30 23:59:59")
    midnight = world.add_invoice(last_update_date="2024-10-31 00:00:00")
    served = [invoice["invoice_id"] for invoice in items(since(server, "2024-10-31"))]
    assert served == [midnight["invoice_id"]]
    assert late["invoice_id"] in [invoice["invoice_id"] for invoice in items(since(server, "2024-10-30"))]
    assert items(since(server, "2024-11-01")) == []


def test_trailing_slash_is_optional(server: EmulatorServer) -> None:
    url = f"{server.accelerate_base_url}/invoices/since/2024-10-20"
    response = requests.get(url, headers={"api-key": server.accelerate_api_key}, timeout=10)
    assert response.content == since(server, "2024-10-20").content


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_wrong_or_missing_api_key_is_404(server: EmulatorServer, key: str) -> None:
    response = since(server, "2024-10-20", key=key)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}
    assert server.accelerate_api_key not in response.text


@pytest.mark.parametrize("day", ["2024-13-01", "20241024", "yesterday", "2024-02-30"])
def test_malformed_date_is_400(server: EmulatorServer, day: str) -> None:
    response = since(server, day)
    assert response.status_code == 400
    assert "error" in response.json()


def test_unknown_paths_are_404(server: EmulatorServer) -> None:
    for path in (
        "/",
        "/qvine/quotevine/api/v2/invoices/",
        "/qvine/quotevine/api/v1/invoices/since/2024-10-01/",
    ):
        response = requests.get(f"{server.qvalia_base_url}{path}", timeout=10)
        assert response.status_code == 404
    assert server.call_count(api="accelerate") == 0


def test_decimals_are_json_numbers_with_their_exact_digits(server: EmulatorServer, world: World) -> None:
    exact = world.add_invoice(
        last_update_date="2024-10-31 10:00:00",
        paid_amount=Decimal("1234567890123.45"),
        net_amount=Decimal("0.10"),
        vat_rate=Decimal("20.00"),
    )
    response = since(server, "2024-10-31")
    assert b'"paid_amount":1234567890123.45' in response.content
    assert b'"net_amount":0.10' in response.content
    assert b'"vat_rate":20.00' in response.content
    (served,) = items(response)
    assert served == exact
    assert str(served["net_amount"]) == "0.10"
    for invoice in items(since(server, "2000-01-01")):
        for line in invoice["invoice_lines"]:
            assert isinstance(line["quantity"], Decimal) and line["quantity"].as_tuple().exponent == -2


def test_unicode_is_served_as_utf8(server: EmulatorServer, world: World) -> None:
    world.add_invoice(
        last_update_date="2024-10-31 10:00:00", payer_display_name="Ünïcödé 株式会社", description="🚗"
    )
    response = since(server, "2024-10-31")
    assert "Ünïcödé 株式会社".encode() in response.content and "🚗".encode() in response.content
    assert items(response)[0]["payer_display_name"] == "Ünïcödé 株式会社"


def test_same_seed_serves_the_same_bytes() -> None:
    bodies = []
    for _ in range(2):
        world = World(seed=21, invoices=80)
        world.advance_day()
        with EmulatorServer(world) as server:
            bodies.append(since(server, "2000-01-01").content)
    assert bodies[0] == bodies[1]


def test_cached_bodies_follow_business_days(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_server, "CACHE_MIN_INVOICES", 0)
    with EmulatorServer(world) as server:
        first = since(server, "2000-01-01").content
        assert since(server, "2000-01-01").content == first
        server.advance_day()
        late_id = world.late_commit()
        after = since(server, "2000-01-01").content
    assert after != first
    assert after == emulator_server.items_body(world.invoices_since(dt.date(2000, 1, 1)))
    assert late_id in [invoice["invoice_id"] for invoice in json.loads(after)["items"]]


@pytest.mark.parametrize(
    ("chunk_bytes", "buffers_per_send", "gathered"),
    [(1, 1, True), (5_000, 3, True), (5_000, 3, False), (8 << 20, 1024, True)],
)
def test_a_cached_body_is_sent_in_pieces_that_make_the_same_bytes(
    world: World, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, buffers_per_send: int, gathered: bool
) -> None:
    monkeypatch.setattr(emulator_server, "CACHE_MIN_INVOICES", 0)
    monkeypatch.setattr(emulator_server, "JOINED_BODY_MAX_BYTES", 0)  # every body sent in pieces
    monkeypatch.setattr(emulator_server, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(emulator_server, "BUFFERS_PER_SEND", buffers_per_send)
    monkeypatch.setattr(emulator_server, "_GATHERED_SENDS", gathered)
    world.add_invoice(last_update_date="2024-12-02 10:00:00")
    with EmulatorServer(world) as server:
        assert len(items(since(server, "2024-12-02"))) == 1
        assert items(since(server, "2099-01-01")) == []
        for round_ in range(2):
            if round_:  # the cache's runs now break around the day's changes
                server.advance_day()
                world.late_commit()
            for day in ("2000-01-01", "2024-10-20", "2024-12-02", "2099-01-01"):  # all, some, one, none
                expected = emulator_server.items_body(world.invoices_since(dt.date.fromisoformat(day)))
                served = since(server, day)
                assert served.content == expected, (round_, day)
                assert int(served.headers["Content-Length"]) == len(expected)


def test_a_cached_body_up_to_the_limit_is_one_buffer_with_the_bytes_of_its_pieces(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After business days a window's invoices sit in the buffers of the days they changed, interleaved by
    id: many short runs, costly to send. A body up to JOINED_BODY_MAX_BYTES is joined once, when cached."""
    monkeypatch.setattr(emulator_server, "CACHE_MIN_INVOICES", 0)
    window = dt.date(2000, 1, 1)
    with EmulatorServer(world) as server:
        runs = []
        for shape in ("pieces", "pieces", "pieces", "joined"):
            server.advance_day()  # the day's changes are encoded into a buffer of their own
            expected = emulator_server.items_body(world.invoices_since(window))
            limit = len(expected) if shape == "joined" else len(expected) - 1
            monkeypatch.setattr(emulator_server, "JOINED_BODY_MAX_BYTES", limit)
            body = server._invoices_body(window)
            assert isinstance(body, bytes) == (shape == "joined")
            runs.append(1 if isinstance(body, bytes) else len(body.runs))
            served = since(server, window.isoformat())
            assert served.content == expected, shape
            assert int(served.headers["Content-Length"]) == len(expected)
    assert runs[0] < runs[2] and runs[2] > 10  # each day breaks the runs around its changes


def test_the_cpu_time_of_serving_is_counted_per_request(world: World) -> None:
    """bench/incremental.py takes it out of its process's CPU time: a real API does not share the machine."""

    def served_once_more(server: EmulatorServer) -> float:
        """The count after one more request. The thread adds it once the answer is sent, so the client may
        read the answer first: wait for it."""
        before = server.serving_cpu_seconds
        since(server, "2000-01-01")
        deadline = time.monotonic() + 5
        while server.serving_cpu_seconds == before and time.monotonic() < deadline:
            time.sleep(0.001)
        return server.serving_cpu_seconds

    def spin(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    with EmulatorServer(world) as server:
        assert server.serving_cpu_seconds == 0.0
        after_one = served_once_more(server)
        assert 0.0 < after_one < served_once_more(server) < 5.0
        # another thread of the process burning CPU meanwhile is not counted: only the request's thread is
        spinner = threading.Thread(target=spin, args=(0.5,))
        before, process_before = server.serving_cpu_seconds, time.process_time()
        spinner.start()
        while spinner.is_alive():
            served_once_more(server)
        spinner.join()
        assert time.process_time() - process_before >= 0.5
        assert server.serving_cpu_seconds - before < 0.25


def test_gathered_sends_that_stop_part_way_resume_where_they_stopped() -> None:
    class Trickle:
        """A socket whose sendmsg takes at most 5 bytes a call, as one interrupted by signals might."""

        def __init__(self) -> None:
            self.received = b""

        def sendmsg(self, buffers: list[bytes | memoryview]) -> int:
            taken = b"".join(buffers)[:5]
            self.received += taken
            return len(taken)

    buffers = [b"abc", memoryview(b"defghij")[1:], b"", b"klmnopqrstu", b"v"]
    for limit in (0, 4, 9, 21):
        connection = Trickle()
        emulator_server._send_buffers(connection, iter(buffers), limit)  # type: ignore[arg-type]
        assert connection.received == b"abcefghijklmnopqrstuv"[:limit]


def test_a_dropped_cached_body_stops_at_half_its_promised_length(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator_server, "CACHE_MIN_INVOICES", 0)
    monkeypatch.setattr(emulator_server, "JOINED_BODY_MAX_BYTES", 0)
    monkeypatch.setattr(emulator_server, "CHUNK_BYTES", 5_000)
    monkeypatch.setattr(emulator_server, "BUFFERS_PER_SEND", 3)
    expected = emulator_server.items_body(world.invoices_since(dt.date(2000, 1, 1)))
    with EmulatorServer(world) as server:
        server.inject("drop", api="accelerate")
        path = f"{emulator_server.ACCELERATE_BASE_PATH}/invoices/since/2000-01-01"
        request = f"GET {path} HTTP/1.1\r\nHost: emulator\r\napi-key: {server.accelerate_api_key}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(request.encode())
            received = connection.makefile("rb").read()  # to the server's hang-up
    head, _, body = received.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(expected)}".encode() in head.split(b"\r\n")
    assert body == expected[: len(expected) // 2]


# ---- Qvalia over HTTP --------------------------------------------------------------------------------------


def test_status_response_has_the_documented_shape(server: EmulatorServer, world: World) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    response = status(server, integration_id)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["data"]["message"]
    assert list(body["data"]["status"]) == STATUS_FIELDS
    assert body["data"]["status"] == world.qvalia_status(integration_id)
    assert body["data"]["status"]["sent_at"].endswith("+01:00")


def test_status_of_an_unknown_invoice_is_404(server: EmulatorServer, world: World) -> None:
    purchase = next(i for i, invoice in world.invoices.items() if invoice["invoice_type"] == "Purchase")
    for integration_id in (str(purchase), "no-such-invoice"):
        response = status(server, integration_id)
        assert response.status_code == 404
        assert response.json() == {"status": "error", "data": {"message": "Invoice not found"}}


def test_status_refusals(server: EmulatorServer, world: World) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    assert status(server, integration_id, key="wrong").status_code == 401
    assert status(server, integration_id, key="wrong").json()["status"] == "error"
    assert status(server, integration_id, account="1111111111").status_code == 403
    account = f"{server.qvalia_base_url}/account/{server.account_reg_no}"
    url = f"{account}/action/invoice/outgoing/status/{integration_id}"
    got = requests.get(url, headers={"Authorization": server.qvalia_api_key}, timeout=10)
    assert got.status_code == 405 and got.headers["Allow"] == "POST"
    empty = requests.post(url, headers={"Authorization": server.qvalia_api_key}, timeout=10)
    assert empty.status_code == 400


def test_path_parameters_are_percent_decoded(server: EmulatorServer, world: World) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    encoded = "".join(f"%{byte:02X}" for byte in integration_id.encode())
    assert status(server, encoded).json()["data"]["status"] == world.qvalia_status(integration_id)
    assert ("qvalia", "status", integration_id) in server.calls


def test_an_order_becomes_an_invoice_once_then_409(server: EmulatorServer, world: World) -> None:
    order_id = next(iter(world.orders))
    first = create(server, order_id, {"send": {"method": "email"}})
    assert first.status_code == 200
    data = first.json()["data"]
    assert first.json()["status"] == "success" and data["message"] == "Invoice created and sent"
    assert json.loads(data["data"]["invoice"]["Invoice"])["Invoice"]["OrderReference"]["ID"] == order_id
    again = create(server, order_id, {"send": {"method": "email"}})
    assert again.status_code == 409 and again.json()["status"] == "error"
    assert world.creations[order_id] == 1
    created = status(server, order_id).json()["data"]["status"]
    assert created["status"] == "sent" and created["send_method"] == "email"
    assert server.calls[("qvalia", "createandsend", order_id)] == 2


def test_create_refuses_unknown_orders_and_bad_bodies(server: EmulatorServer, world: World) -> None:
    order_id = next(iter(world.orders))
    assert create(server, "ORD-0000", {"send": {"method": "peppol"}}).status_code == 404
    for body in ({}, {"send": "email"}, {"send": {"method": "carrier pigeon"}}, []):
        assert create(server, order_id, body).status_code == 400, body
    assert world.creations[order_id] == 0


# ---- faults and counting -----------------------------------------------------------------------------------


def test_injected_429_carries_retry_after_then_the_next_call_succeeds(server: EmulatorServer) -> None:
    server.faults.retry_after_s = 2
    server.inject("429", times=1, api="accelerate")
    refused = since(server, "2024-10-20")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
    assert since(server, "2024-10-20").status_code == 200
    assert server.faults_served["429"] == 1


def test_injected_faults_hit_only_their_api_and_only_so_many_times(
    server: EmulatorServer, world: World
) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    server.inject("500", times=2, api="qvalia")
    assert since(server, "2024-10-20").status_code == 200
    assert status(server, integration_id).status_code == 500
    assert status(server, integration_id).json() == {
        "status": "error",
        "data": {"message": "Internal server error"},
    }
    assert status(server, integration_id).status_code == 200
    server.inject("503", times=5)
    assert since(server, "2024-10-20").status_code == 503
    server.reset_faults()
    assert since(server, "2024-10-20").status_code == 200


def test_a_dropped_response_is_truncated(server: EmulatorServer) -> None:
    server.inject("drop", api="accelerate")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        since(server, "2000-01-01")
    assert items(since(server, "2000-01-01"))
    assert server.faults_served["drop"] == 1


def test_a_timeout_stalls_longer_than_the_client_waits(server: EmulatorServer) -> None:
    server.faults.timeout_sleep_s = 1.5
    server.inject("timeout", api="accelerate")
    with pytest.raises(requests.exceptions.ReadTimeout):
        since(server, "2024-10-20", timeout=0.3)
    assert since(server, "2024-10-20").status_code == 200


def test_an_html_page_can_come_with_status_200(server: EmulatorServer) -> None:
    server.inject("html", api="accelerate")
    response = since(server, "2024-10-20")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")


def test_random_faults_repeat_with_the_same_seed(world: World) -> None:
    outcomes = []
    for _ in range(2):
        with EmulatorServer(
            world, faults=Faults(rate_429=0.3, rate_5xx=0.2, retry_after_s=0, seed=5)
        ) as server:
            outcomes.append([since(server, "2024-10-24").status_code for _ in range(20)])
            assert server.faults_served["429"] + server.faults_served["500"] + server.faults_served["503"] > 0
    assert outcomes[0] == outcomes[1]
    assert {200, 429} <= set(outcomes[0])


def test_calls_are_counted_by_api_kind_and_key(server: EmulatorServer, world: World) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    since(server, "2024-10-20")
    since(server, "2024-10-20")
    since(server, "2024-10-21", key="wrong")
    status(server, integration_id)
    assert server.calls[("accelerate", "invoices_since", "2024-10-20")] == 2
    assert server.call_count(api="accelerate") == 3
    assert server.call_count(kind="status") == 1
    assert server.call_count() == 4
    server.reset_calls()
    assert server.call_count() == 0


def test_stop_cuts_keep_alive_connections(world: World) -> None:
    session = requests.Session()
    server = EmulatorServer(world).start()
    url = f"{server.accelerate_base_url}/invoices/since/2024-10-24/"
    assert session.get(url, headers={"api-key": server.accelerate_api_key}, timeout=5).status_code == 200
    server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url, headers={"api-key": server.accelerate_api_key}, timeout=5)
    assert server.errors == []


def test_strings_holding_nul_do_not_confuse_the_decimal_encoding() -> None:
    import json as json_module
    from decimal import Decimal as D

    from pipelines.emulator.server import dumps

    value = {"amount": D("12.30"), "text": "a\x00b\x00", "nested": [D("-0.00"), "\x00"]}
    assert json_module.loads(dumps(value), parse_float=D) == value


def test_an_injected_body_is_served_byte_for_byte_then_the_world_again(
    server: EmulatorServer, world: World
) -> None:
    raw = b'{"items":[{"invoice_id":1,"payer_display_name":"\xff\xfe"}]'
    server.inject_body(raw, times=2, api="accelerate")
    integration_id = next(iter(world.qvalia_statuses))
    assert status(server, integration_id).status_code == 200, "the other API is not touched"
    for _ in range(2):
        served = since(server, "2024-10-20")
        assert served.status_code == 200 and served.content == raw
        assert served.headers["Content-Type"] == emulator_server.JSON_TYPE
    assert items(since(server, "2024-10-20")) == world.invoices_since(dt.date(2024, 10, 20))
    assert server.faults_served["body"] == 2


def test_an_injected_body_takes_its_status_and_content_type(server: EmulatorServer, world: World) -> None:
    integration_id = next(iter(world.qvalia_statuses))
    server.inject_body(
        b"<html>gateway</html>", status=502, content_type="text/html", api="qvalia", headers={"X-Proxy": "1"}
    )
    served = status(server, integration_id)
    assert (served.status_code, served.headers["Content-Type"], served.content) == (
        502,
        "text/html",
        b"<html>gateway</html>",
    )
    assert served.headers["X-Proxy"] == "1"
    assert status(server, integration_id).json()["status"] == "success"
    with pytest.raises(ValueError):
        server.inject_body(b"{}", status=42)
    with pytest.raises(TypeError):
        server.inject_body("{}")  # type: ignore[arg-type]
