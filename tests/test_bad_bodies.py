"""What Accelerate may answer that it should not: bytes that are not UTF-8, an HTML page with status 200,
JSON of the wrong shape or cut short, invoices without their key, numbers no column can hold. Each body
either loads faithfully or fails the run with one line (a PipelineError, which the command line prints as
its one line), leaving every table, the cursor and the pipeline's working folder as they were; the next
clean run then converges to the world."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipelines.accelerate import settings as accelerate_settings
from pipelines.emulator import EmulatorServer, World
from pipelines.emulator.server import HTML_PAGE, JSON_TYPE, dumps, items_body
from pipelines.errors import PipelineError
from pipelines.invoices import run_job

from conftest import LONDON, Harness, assert_rows_equal_world, expected_value

SEED = 21
INVOICES = 30
Body = Callable[[list[dict[str, Any]]], bytes]
PROPERTY_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # "explain" traces: far too slow
)


@pytest.fixture(autouse=True)
def small_batches_and_fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several batches per body (read by arrow or as dicts), so a bad invoice near the end comes after
    # others were handed to dlt.
    monkeypatch.setattr(accelerate_settings, "BATCH_SIZE", 4)
    monkeypatch.setattr(accelerate_settings, "DICT_BATCH_SIZE", 4)
    monkeypatch.setattr(accelerate_settings, "ROWS_PER_ITEM", 4)
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.05")


@pytest.fixture(scope="module")
def loaded_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline folder and its database after one clean run of both sources; each test works on a copy."""
    folder = tmp_path_factory.mktemp("loaded_once")
    with EmulatorServer(World(seed=SEED, invoices=INVOICES)) as server:
        Harness(folder, server).run_both()
    return folder


class Scene:
    """A copy of `loaded_once`, with its world one business day on, served by its own emulator."""

    def __init__(self, loaded_once: Path, folder: Path) -> None:
        shutil.copytree(loaded_once, folder, dirs_exist_ok=True)
        self.world = World(seed=SEED, invoices=INVOICES)
        self.loaded = copy.deepcopy(self.world.invoices)  # what the tables hold now
        self.world.advance_day()
        self.server = EmulatorServer(self.world).start()
        self.harness = Harness(folder, self.server)
        self.since = next_window_start(self.harness)

    def served(self) -> list[dict[str, Any]]:
        """A copy of what the next run will be sent, to spoil."""
        return copy.deepcopy(self.world.invoices_since(self.since))

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def scene(loaded_once: Path, tmp_path: Path) -> Iterator[Scene]:
    made = Scene(loaded_once, tmp_path / "scene")
    yield made
    made.close()


def resource_state(harness: Harness) -> dict[str, Any]:
    sources = harness.pipeline.state.get("sources", {})
    return copy.deepcopy(sources.get("accelerate", {}).get("resources", {}).get("invoice", {}))


def cursor(harness: Harness) -> dt.datetime:
    return dt.datetime.fromisoformat(resource_state(harness)[accelerate_settings.STATE_CURSOR])


def next_window_start(harness: Harness) -> dt.date:
    """The day the next run asks for invoices since: the cursor's day less the lookback (one day)."""
    return cursor(harness).astimezone(LONDON).date() - dt.timedelta(days=1)


def snapshot(harness: Harness) -> dict[str, Any]:
    """Every row of every table of the dataset, the columns, and the resource's state (cursor included)."""
    with duckdb.connect(str(harness.database), read_only=True) as connection:
        columns = connection.sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'billing' ORDER BY ALL"
        ).fetchall()
        tables = sorted({table for table, _, _ in columns})
        rows = {
            name: connection.sql(f"SELECT * FROM billing.{name} ORDER BY ALL").fetchall() for name in tables
        }
    return {"rows": rows, "columns": columns, "state": resource_state(harness)}


def refused_or_loaded(
    scene: Scene,
    body: bytes,
    content_type: str = JSON_TYPE,
    headers: dict[str, str] | None = None,
    api: Literal["accelerate", "qvalia"] = "accelerate",
) -> str | None:
    """Run `api`'s source once on `body`: None if it loaded, else the one-line message, after checking that
    the failed run changed nothing and left nothing pending."""
    before = snapshot(scene.harness)
    served = scene.server.faults_served["body"]
    scene.server.inject_body(body, content_type=content_type, api=api, headers=headers)
    try:
        if api == "accelerate":
            scene.harness.run()
        else:
            run_job(scene.harness.pipeline, qvalia=scene.harness.qvalia(), only="qvalia")
    except PipelineError as error:
        message = str(error)
    else:
        return None
    assert scene.server.faults_served["body"] == served + 1
    assert message.strip() and "\n" not in message, message
    assert not scene.harness.pipeline.has_pending_data
    assert snapshot(scene.harness) == before, f"a refused body changed the destination: {message}"
    return message


def assert_refused(
    scene: Scene,
    body: bytes,
    fragment: str = "",
    content_type: str = JSON_TYPE,
    headers: dict[str, str] | None = None,
) -> str:
    """The run fails with one line holding `fragment`; nothing changed, nothing is left pending."""
    message = refused_or_loaded(scene, body, content_type, headers)
    assert message is not None, "the body loaded"
    assert fragment in message, message
    return message


def assert_converges(scene: Scene, loaded_as_sent: Sequence[dict[str, Any]] = ()) -> None:
    """Once the faults stop, the next run stores every invoice it reads as the world holds it, and the
    cursor reaches the world's newest stamp. An invoice that a spoiled but readable body carried was loaded
    as sent (`loaded_as_sent`: nothing tells a value changed in transit from a real change); if its stamp
    is older than the next run's window, nothing reads it again, and it keeps what was sent."""
    read_again = {
        invoice["invoice_id"] for invoice in scene.world.invoices_since(next_window_start(scene.harness))
    }
    not_read_again = [invoice for invoice in loaded_as_sent if invoice["invoice_id"] not in read_again]
    scene.server.reset_faults()
    scene.harness.run()
    if not_read_again:
        assert_loaded_as_sent(scene.harness, not_read_again, scene.world.invoices)
    else:
        scene.harness.assert_equals_world(scene.world)
    assert cursor(scene.harness) == expected_value("last_update_date", scene.world.max_last_update_date)


def spoil_first(field: str, raw: bytes) -> Body:
    """The first `"field":"` string of the body gets `raw` bytes at its start."""

    def body(invoices: list[dict[str, Any]]) -> bytes:
        text = items_body(invoices)
        assert f'"{field}":"'.encode() in text
        return text.replace(f'"{field}":"'.encode(), f'"{field}":"'.encode() + raw, 1)

    return body


def last_with(**changes: Any) -> Body:
    """The last invoice of the body with some fields changed (a value of `...` removes the field)."""

    def body(invoices: list[dict[str, Any]]) -> bytes:
        for name, value in changes.items():
            if value is ...:
                invoices[-1].pop(name, None)
            else:
                invoices[-1][name] = value
        return items_body(invoices)

    return body


def raw_value(field: str, raw: bytes) -> Body:
    """The last invoice's `field` sent as the raw JSON text `raw` (NaN, 3,000 nested arrays...)."""

    def body(invoices: list[dict[str, Any]]) -> bytes:
        invoices[-1][field] = "@@raw@@"
        return items_body(invoices).replace(b'"@@raw@@"', raw)

    return body


# (what is wrong, the body made from what the next run would be sent, a fragment of the message)
NOT_A_JSON_DOCUMENT: list[tuple[str, Body, str]] = [
    ("an HTML page", lambda _: HTML_PAGE, "HTML page"),
    ("an empty body", lambda _: b"", "not valid JSON"),
    ("UTF-16", lambda invoices: items_body(invoices).decode().encode("utf-16"), "not valid JSON"),
    ("invalid UTF-8 in a string", spoil_first("payer_street", b"\xff\xfe"), "UTF"),
    ("a character cut at the string's end", spoil_first("payer_street", b'\xe2\x82"'), "not valid JSON"),
    ("a raw control character", spoil_first("payer_street", b"\x01"), "inside string"),
    ("half a surrogate pair (high)", spoil_first("payer_street", b"\\ud83d"), "surrogate"),
    ("half a surrogate pair (low)", spoil_first("payer_street", b"\\ude00"), "surrogate"),
    ("NaN", raw_value("paid_amount", b"NaN"), "not valid JSON"),
    ("cut before the last brace", lambda invoices: items_body(invoices)[:-1], "premature EOF"),
    ("trailing garbage", lambda invoices: items_body(invoices) + b"<!-- cache -->", "trailing garbage"),
]

NOT_A_LIST_OF_STORABLE_INVOICES: list[tuple[str, Body, str]] = [
    ("null", lambda _: b"null", "wrong shape"),
    ("an error object", lambda _: b'{"error":"Internal error"}', "wrong shape"),
    ("items one level down", lambda invoices: b'{"data":' + items_body(invoices) + b"}", "wrong shape"),
    ("items an object", lambda _: b'{"items":{"invoice_id":1}}', "wrong shape"),
    ("items numbers", lambda _: b'{"items":[1,2,3]}', "not an object"),
    ("a number after the invoices", lambda invoices: items_body(invoices)[:-2] + b",7]}", "not an object"),
    ("invoice_lines a string", last_with(invoice_lines="none"), "invoice_lines"),
    ("no invoice_id", last_with(invoice_id=...), "invoice_id"),
    ("invoice_id null", last_with(invoice_id=None), "invoice_id"),
    ("invoice_id a word", last_with(invoice_id="abc"), "invoice_id"),
    ("last_update_date a word", last_with(last_update_date="yesterday"), "last_update_date"),
    ("an amount of 1E+400", last_with(paid_amount=Decimal("1E+400")), "paid_amount"),
    ("an amount with 12 decimals", last_with(paid_amount=Decimal("1.000000000001")), "paid_amount"),
    ("a date in month 13", last_with(due_date="2024-13-01"), "due_date"),
]


@pytest.mark.parametrize(
    "cases",
    [
        pytest.param(NOT_A_JSON_DOCUMENT, id="not-a-json-document"),
        pytest.param(NOT_A_LIST_OF_STORABLE_INVOICES, id="not-a-list-of-storable-invoices"),
    ],
)
def test_unreadable_bodies_fail_with_one_line_change_nothing_and_the_next_run_converges(
    scene: Scene, cases: list[tuple[str, Body, str]]
) -> None:
    for name, body, fragment in cases:
        message = refused_or_loaded(scene, body(scene.served()))
        assert message is not None and fragment in message, (name, message)
    assert_converges(scene)


def test_an_html_page_labelled_json_or_a_body_lying_about_compression_fail_with_one_line(
    scene: Scene,
) -> None:
    assert_refused(scene, HTML_PAGE, "HTML page", content_type=JSON_TYPE)
    assert_refused(
        scene, items_body(scene.served()), "Content-Encoding", headers={"Content-Encoding": "gzip"}
    )
    assert_converges(scene)


def qvalia_status(raw: bytes) -> bytes:
    return (
        b'{"status":"success","data":{"message":"Invoice status retrieved","status":{"status":"'
        + raw
        + b'"}}}'
    )


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        pytest.param(HTML_PAGE, {}, "HTML page", id="html"),
        pytest.param(b'{"status":"success","data":{}}', {}, "status object", id="no-status-object"),
        pytest.param(qvalia_status(b"SENT")[:-5], {}, "not JSON", id="cut"),
        pytest.param(qvalia_status(b"SENT\xff"), {}, "not UTF-8", id="invalid-utf8"),
        pytest.param(qvalia_status(b"SENT\\ud800"), {}, "surrogate", id="half-surrogate"),
        pytest.param(
            qvalia_status(b"SENT"), {"Content-Encoding": "gzip"}, "Content-Encoding", id="lying-compression"
        ),
    ],
)
def test_qvalia_bodies_that_cannot_be_read_fail_with_one_line_and_change_nothing(
    scene: Scene, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    message = refused_or_loaded(scene, body, headers=headers, api="qvalia")
    assert message is not None and fragment in message, message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(
            last_with(invoice_id=Decimal("100001.5")),
            "invoice_id",
            id="invoice_id-1.5",
        ),
        pytest.param(
            last_with(contract_id=2**63),
            "contract_id",
            id="contract_id-beyond-bigint",
        ),
        pytest.param(
            raw_value("misc_payload", b"[" * 3000 + b"]" * 3000),
            "",
            id="nested-3000-deep",
        ),
    ],
)
def test_numbers_and_nesting_no_column_can_hold_fail_with_one_line(
    scene: Scene, body: Body, fragment: str
) -> None:
    assert_refused(scene, body(scene.served()), fragment)


def test_the_command_line_says_a_refused_body_in_one_line_and_loads_nothing(tmp_path: Path) -> None:
    with EmulatorServer(World(seed=SEED, invoices=INVOICES)) as server:
        server.inject_body(HTML_PAGE, api="accelerate")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
        env.update(
            DLT_DATA_DIR=str(tmp_path / "dlt_data"),
            SOURCES__ACCELERATE__BASE_URL=server.accelerate_base_url,
            SOURCES__ACCELERATE__API_KEY=server.accelerate_api_key,
        )
        command = [sys.executable, "-m", "pipelines", "run", "--only", "accelerate"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    database = tmp_path / "invoices.duckdb"
    if database.exists():
        with duckdb.connect(str(database), read_only=True) as connection:
            tables = connection.sql("SELECT table_name FROM information_schema.tables").fetchall()
        assert ("invoice",) not in tables and ("invoice_line",) not in tables


def test_bodies_with_nothing_to_load_change_no_row_and_no_cursor(scene: Scene) -> None:
    before = snapshot(scene.harness)
    for body in (b'{"items":[]}', b' {"items" : null }\n'):
        scene.server.inject_body(body, api="accelerate")
        scene.harness.run()
        after = snapshot(scene.harness)
        for table in ("invoice", "invoice_line"):
            assert after["rows"][table] == before["rows"][table], body
        assert (
            after["state"][accelerate_settings.STATE_CURSOR]
            == before["state"][accelerate_settings.STATE_CURSOR]
        )
    assert_converges(scene)


def test_odd_but_readable_bodies_load_faithfully(scene: Scene) -> None:
    world = scene.world
    everything = copy.deepcopy(world.invoices_since(dt.date(2000, 1, 1)))
    pretty = b'{\n  "count": 1,\n  "items": [\n    ' + b",\n    ".join(dumps(i) for i in everything)
    readable = [
        (b"[" + items_body(everything)[10:-1], JSON_TYPE),  # a bare array
        (pretty + b'\n  ],\n  "next": null\n}\n', "text/plain"),  # spaced out, more keys, plain text
    ]
    for body, content_type in readable:
        scene.server.inject_body(body, content_type=content_type, api="accelerate")
        scene.harness.run()
        scene.harness.assert_equals_world(world)

    # one invoice without last_update_date, one with the largest amount DECIMAL(38,9) holds
    # (both sent again by the next run, which asks from the day before the newest change)
    today = world.max_last_update_date[:10]
    undated, largest = [i for i in everything if i["last_update_date"].startswith(today)][:2]
    del undated["last_update_date"]
    largest["paid_amount"] = Decimal("99999999999999999999999999999.999999999")
    # a new version: an invoice sent again with the stamp it is stored with is the version already stored
    stamp = dt.datetime.fromisoformat(largest["last_update_date"]) + dt.timedelta(seconds=1)
    largest["last_update_date"] = stamp.strftime("%Y-%m-%d %H:%M:%S")
    scene.server.inject_body(items_body([largest, undated]), api="accelerate")
    scene.harness.run()
    stored = scene.harness.invoices()
    assert stored[undated["invoice_id"]]["last_update_date"] is None
    assert stored[largest["invoice_id"]]["paid_amount"] == largest["paid_amount"]
    others = {
        k: v for k, v in world.invoices.items() if k not in (undated["invoice_id"], largest["invoice_id"])
    }
    expected = others | {undated["invoice_id"]: undated, largest["invoice_id"]: largest}
    assert_rows_equal_world(
        scene.harness.rows("invoice"), scene.harness.rows("invoice_line"), SimpleNamespace(invoices=expected)
    )
    assert_converges(scene)


# ---- random corruption ---------------------------------------------------------------------------------


def test_a_randomly_cut_or_non_utf8_body_is_always_refused_and_changes_nothing(scene: Scene) -> None:
    body = items_body(scene.served())

    @settings(PROPERTY_SETTINGS, max_examples=8)
    @given(data=st.data())
    def refused(data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["cut", "stray continuation byte", "byte UTF-8 never uses"]))
        at = data.draw(st.integers(0, len(body) - 1), label="at")
        if how == "cut":
            spoiled = body[:at]
        elif how == "stray continuation byte":
            spoiled = body[:at] + bytes([data.draw(st.integers(0x80, 0xBF))]) + body[at:]
        else:
            spoiled = body[:at] + bytes([data.draw(st.integers(0xF8, 0xFF))]) + body[at + 1 :]
        assert_refused(scene, spoiled)

    refused()
    assert_converges(scene)


JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[{}\[\]:,]|true|false|null')
# Two keys are left alone: a changed invoice_id is another invoice (two versions of one invoice in one
# body is another question), and a changed last_update_date another cursor.
UNTOUCHED_KEYS = (b"invoice_id", b"last_update_date")


def value_spans(body: bytes) -> list[tuple[int, int]]:
    """(start, end) of every string and number value of the body, keys excluded."""
    tokens = list(JSON_TOKEN.finditer(body))
    spans = []
    key = None
    for index, token in enumerate(tokens):
        text = token.group()
        following = tokens[index + 1].group() if index + 1 < len(tokens) else b""
        if text.startswith(b'"') and following == b":":
            key = text[1:-1]
            continue
        is_value = text[:1] in (b'"', b"-", *(bytes([digit]) for digit in b"0123456789"))
        if is_value and key not in UNTOUCHED_KEYS:
            spans.append((token.start(), token.end()))
    return spans


def decoded_items(body: bytes) -> list[dict[str, Any]] | None:
    """The invoices a strict reader finds in the body, or None when it is not valid JSON in UTF-8."""

    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        document = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=no_constants)
    except ValueError:
        return None
    return document["items"]


def same_value(stored: Any, sent: Any) -> bool:
    """`sent` (from the JSON) read as the type of the column it landed in equals what is stored."""
    if sent is None:
        return stored is None
    try:
        if isinstance(stored, bool):
            return sent is stored
        if isinstance(stored, int):
            return not isinstance(sent, bool) and Decimal(str(sent)) == stored
        if isinstance(stored, Decimal):
            return not isinstance(sent, bool) and Decimal(str(sent).strip()) == stored
        if isinstance(stored, dt.datetime):
            parsed = dt.datetime.fromisoformat(sent.strip())
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=LONDON)) == stored
        if isinstance(stored, dt.date):
            return dt.date.fromisoformat(sent.strip()) == stored
        if isinstance(sent, dict | list):
            return stored == json.dumps(sent, ensure_ascii=False, separators=(",", ":"))
        return stored == sent
    except (ValueError, TypeError, ArithmeticError):
        return False


def assert_loaded_as_sent(
    harness: Harness, sent: list[dict[str, Any]], kept: dict[int, dict[str, Any]]
) -> None:
    """Each sent invoice and line is stored with every value it was sent; the others are as they were."""
    stored, lines = harness.invoices(), harness.lines()
    sent_ids = {invoice["invoice_id"] for invoice in sent}
    unchanged = {k: v for k, v in kept.items() if k not in sent_ids}
    assert_rows_equal_world(
        [row for row in harness.rows("invoice") if row["invoice_id"] not in sent_ids],
        [row for row in harness.rows("invoice_line") if row["invoice_id"] not in sent_ids],
        SimpleNamespace(invoices=unchanged),
    )
    for invoice in sent:
        row = stored[invoice["invoice_id"]]
        for name, value in invoice.items():
            if name != "invoice_lines":
                assert same_value(row.get(name), value), (invoice["invoice_id"], name, value, row.get(name))
        sent_lines = invoice.get("invoice_lines") or []
        stored_lines = sorted(key for key in lines if key[0] == invoice["invoice_id"])
        assert stored_lines == [(invoice["invoice_id"], p) for p in range(1, len(sent_lines) + 1)]
        for position, line in enumerate(sent_lines, start=1):
            row = lines[(invoice["invoice_id"], position)]
            for name, value in line.items():
                assert same_value(row.get(name), value), (invoice["invoice_id"], position, name, value)


def test_a_value_spoiled_where_no_later_run_reads_again_keeps_what_was_sent(scene: Scene) -> None:
    """The window of the run after a business day starts at that day, less the lookback: an invoice stamped
    before it, read in this run's window and spoiled readably, is loaded as sent and is never read again.
    (Found by the property test below, which drew a value of such an invoice in one run out of six, and
    expected it to converge too.)"""
    served = scene.served()
    latest_day = max(invoice["last_update_date"] for invoice in served)[:10]
    next_start = dt.date.fromisoformat(latest_day) - dt.timedelta(days=1)
    older = [
        invoice for invoice in served if dt.date.fromisoformat(invoice["last_update_date"][:10]) < next_start
    ]
    assert older, "the world's day must leave an invoice of the window out of the next one"
    spoiled = older[0]
    spoiled["external_reference"] = f"{spoiled['external_reference']} (spoiled)"
    assert refused_or_loaded(scene, items_body(served)) is None
    assert_loaded_as_sent(scene.harness, served, scene.loaded)
    assert_converges(scene, loaded_as_sent=served)
    stored = {row["invoice_id"]: row for row in scene.harness.rows("invoice")}
    assert stored[spoiled["invoice_id"]]["external_reference"] == spoiled["external_reference"]


@settings(PROPERTY_SETTINGS, max_examples=5)
@given(data=st.data())
def test_a_value_with_one_byte_changed_loads_as_sent_or_is_refused(
    loaded_once: Path, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        scene = Scene(loaded_once, Path(folder))
        try:
            served = scene.served()
            body = items_body(served)
            start, end = data.draw(st.sampled_from(value_spans(body)), label="value")
            at = data.draw(st.integers(start, end - 1), label="at")
            spoiled = body[:at] + bytes([data.draw(st.integers(0, 255), label="byte")]) + body[at + 1 :]
            sent = decoded_items(spoiled)
            if sent is None and spoiled[at] in b"\x0b\x0c":  # yajl reads VT and FF between tokens as spaces
                sent = decoded_items(spoiled[:at] + b" " + spoiled[at + 1 :])
            if sent is None:
                assert_refused(scene, spoiled)
                return
            if refused_or_loaded(scene, spoiled) is None:  # a readable but odd value may be refused
                assert_loaded_as_sent(scene.harness, sent, scene.loaded)
                assert_converges(scene, loaded_as_sent=sent)
            else:
                assert_converges(scene)
        finally:
            scene.close()
