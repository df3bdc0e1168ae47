"""A local HTTP server speaking the Accelerate and Qvalia APIs over a `World`, with faults on demand.

It follows the two API documents in shared/seeds where they are explicit (paths, headers, status codes,
body shapes) and counts every call, so tests can check what a pipeline asked for. It is for tests, the demo
and benchmarks on loopback; it is not a production server and has no TLS.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pipelines.emulator.world import (
    SEND_METHODS,
    DayChanges,
    InvalidSendMethod,
    OrderAlreadyInvoiced,
    OrderNotFound,
    World,
)

ACCELERATE_PREFIX = ("qvine", "quotevine", "api", "v2", "invoices", "since")
ACCELERATE_BASE_PATH = "/qvine/quotevine/api/v2"
JSON_TYPE = "application/json; charset=utf-8"
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
# Worlds smaller than this are serialized afresh on every request, so a test that edits `world.invoices`
# by hand sees its edit at once; bigger ones are cached (see EmulatorServer._invoices_body).
CACHE_MIN_INVOICES = 10_000
CACHED_BODIES = 4
# Invoices encoded for a cached body are joined into buffers of about this size, which the cache keeps.
CHUNK_BYTES = 8 << 20
# Buffers gathered into one system call when a cached body is sent: IOV_MAX on Linux and macOS.
BUFFERS_PER_SEND = 1024
# A cached body up to this size is joined into one buffer when it is made (a benchmark's `warm` makes it
# before the run it times). After business days, a window's invoices sit in the buffers of the days they
# changed, interleaved by id: a 10% window of 100,000 invoices (50 MB) was 16,788 runs, whose gathered
# sends took 43 ms of CPU where one buffer takes 28 (29.5 -> 20.3 ms wall), in the benchmark's own process.
# Bigger bodies (a backfill: a few hundred long runs) stay in pieces, never copied whole.
JOINED_BODY_MAX_BYTES = 64 << 20

Api = Literal["accelerate", "qvalia"]
FaultKind = Literal["400", "401", "403", "404", "429", "500", "502", "503", "drop", "timeout", "html"]
STATUS_FAULTS = frozenset({"400", "401", "403", "404", "429", "500", "502", "503"})
FAULT_KINDS = STATUS_FAULTS | {"drop", "timeout", "html"}
APIS = frozenset({"accelerate", "qvalia"})
FAULT_MESSAGES = {
    "400": "Bad request",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "Not found",
    "429": "Too many requests",
    "500": "Internal server error",
    "502": "Bad gateway",
    "503": "Service unavailable",
}
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>Scheduled maintenance.</p></body></html>"
)


@dataclass
class Faults:
    """Random faults, each request drawing once from its own Random(seed) so a run is reproducible.

    rate_429, rate_5xx (500 or 503), rate_drop and rate_timeout are probabilities per request; latency_s is
    added to every request; retry_after_s goes in the 429's Retry-After header (whole seconds, rounded up);
    timeout_sleep_s is how long a "timeout" (injected or random) stalls before answering.
    """

    latency_s: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    seed: int = 0
    timeout_sleep_s: float = 5.0
    rate_timeout: float = 0.0


@dataclass
class _Injection:
    kind: str
    times: int
    api: str | None
    response: _Response | None = None  # the "body" kind's fixed answer


_ITEMS_HEAD = b'{"items":['
_ITEMS_TAIL = b"]}"
_COMMA = b","
_GATHERED_SENDS = hasattr(socket.socket, "sendmsg")  # not on Windows


@dataclass(frozen=True)
class _ItemsBody:
    """A cached Accelerate 200 body, {"items":[...]}, as runs of comma-separated invoices in the cache's buffers.

    The body is `{"items":[` + the runs joined with commas + `]}`; it is sent run by run, and joined only up
    to JOINED_BODY_MAX_BYTES, so a million-invoice body adds a few hundred views to the cache, not a 2 GB
    copy of what the cache holds.
    """

    runs: list[memoryview]
    size: int

    @classmethod
    def of(cls, runs: list[memoryview]) -> _ItemsBody:
        commas = max(0, len(runs) - 1)
        return cls(runs, len(_ITEMS_HEAD) + sum(map(len, runs)) + commas + len(_ITEMS_TAIL))

    def __len__(self) -> int:
        return self.size

    def buffers(self) -> Iterator[bytes | memoryview]:
        """The body's bytes in order."""
        yield _ITEMS_HEAD
        for index, run in enumerate(self.runs):
            if index:
                yield _COMMA
            yield run
        yield _ITEMS_TAIL


class _RunsBuilder:
    """Lays out a body's invoices as runs over the fragment cache, encoding and caching the ones it lacks.

    The cache maps invoice_id to (last_update_date, buffer, start, end): the invoice's JSON is
    buffer[start:end], and invoices cached together sit in one buffer separated by commas. Consecutive
    invoices cached side by side become one run; invoices not cached (new, or changed since) are encoded and
    joined into a new buffer of about CHUNK_BYTES. A fresh body is then a few hundred large runs, and a body
    after a business day the old buffers' runs between the changed invoices. A buffer lives while the cache
    or a body still points into it, so each business day adds its changed invoices' size until the cache is
    emptied.
    """

    def __init__(self, fragments: dict[int, tuple[str, bytes, int, int]]) -> None:
        self.fragments = fragments
        self.runs: list[memoryview] = []
        self.buffer: bytes | None = None  # the open run of cached invoices: buffer[start:end]
        self.start = self.end = 0
        self.fresh: list[tuple[int, str, bytes]] = []  # encoded, not joined yet: (invoice_id, stamp, json)
        self.fresh_bytes = 0

    def add(self, invoice: dict[str, Any]) -> None:
        invoice_id = invoice["invoice_id"]
        stamp = invoice["last_update_date"]
        cached = self.fragments.get(invoice_id)
        if cached is not None and cached[0] == stamp:
            self._join_fresh()
            _, buffer, start, end = cached
            if buffer is self.buffer and start == self.end + 1:
                self.end = end
            else:
                self._close_run()
                self.buffer, self.start, self.end = buffer, start, end
        else:
            self._close_run()
            encoded = dumps(invoice)
            self.fresh.append((invoice_id, stamp, encoded))
            self.fresh_bytes += len(encoded) + 1
            if self.fresh_bytes >= CHUNK_BYTES:
                self._join_fresh()

    def finish(self) -> list[memoryview]:
        self._close_run()
        self._join_fresh()
        return self.runs

    def _close_run(self) -> None:
        if self.buffer is not None:
            self.runs.append(memoryview(self.buffer)[self.start : self.end])
            self.buffer = None

    def _join_fresh(self) -> None:
        if not self.fresh:
            return
        buffer = b",".join([encoded for _, _, encoded in self.fresh])
        start = 0
        for invoice_id, stamp, encoded in self.fresh:
            self.fragments[invoice_id] = (stamp, buffer, start, start + len(encoded))
            start += len(encoded) + 1
        self.runs.append(memoryview(buffer))
        self.fresh = []
        self.fresh_bytes = 0


@dataclass
class _Response:
    status: int
    body: bytes | _ItemsBody
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


# Brackets a Decimal's digits so they can be unquoted after encoding. A random token per process, so no
# real string (even one holding NUL, which generated and property-tested data may) can look the same.
_MARK = "\x00" + uuid.uuid4().hex
_OPEN = '"\\u0000' + _MARK[1:] + ":"
_CLOSE = ":\\u0000" + _MARK[1:] + '"'


def _json_default(value: object) -> str:
    """Mark a Decimal so its digits can be unquoted after encoding: JSON numbers with their exact scale."""
    if isinstance(value, Decimal) and value.is_finite():
        return _MARK + ":" + str(value) + ":" + _MARK  # str(): an f-string would go through __format__
    raise TypeError(f"the emulator cannot serve {type(value).__name__} {value!r} as JSON")


_encode = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, separators=(",", ":"), default=_json_default
).encode


def dumps(value: Any) -> bytes:
    """UTF-8 JSON with Decimals as numbers (123.40 stays 123.40)."""
    text = _encode(value)
    if _OPEN in text:
        text = text.replace(_OPEN, "").replace(_CLOSE, "")
    return text.encode("utf-8")


def items_body(items: Iterable[dict[str, Any]]) -> bytes:
    """The Accelerate 200 body, {"items": [...]}, built invoice by invoice.

    Encoding each invoice on its own keeps the strings compact (one emoji would otherwise widen a whole
    100,000-invoice document to four bytes a character) and the memory bounded.
    """
    return _ITEMS_HEAD + b",".join([dumps(item) for item in items]) + _ITEMS_TAIL


def _error_body(api: str, message: str) -> bytes:
    """Accelerate's errors are undocumented, so a small {"error": ...}; Qvalia's follow its envelope."""
    if api == "qvalia":
        return dumps({"status": "error", "data": {"message": message}})
    return dumps({"error": message})


class EmulatorServer:
    """Serves both APIs for one World on loopback, in a daemon thread; use it as a context manager.

    `calls` counts requests by ("accelerate", "invoices_since", date), ("qvalia", "status", integration_id)
    and ("qvalia", "createandsend", order_id) (unknown paths as ("unknown", method, path)); `faults_served`
    counts faults by kind. Faulted requests are counted in `calls` too: they reached the server.
    """

    def __init__(
        self,
        world: World,
        host: str = "127.0.0.1",
        port: int = 0,
        accelerate_api_key: str = "demo-accelerate-key",
        qvalia_api_key: str = "demo-qvalia-key",
        account_reg_no: str = "5567321707",
        faults: Faults | None = None,
    ) -> None:
        self.world = world
        self.host = host
        self.accelerate_api_key = accelerate_api_key
        self.qvalia_api_key = qvalia_api_key
        self.account_reg_no = account_reg_no
        self.faults = faults if faults is not None else Faults()
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.errors: list[str] = []
        # CPU time the request threads took (user and system, sends included): a benchmark that runs the
        # emulator in its own process takes it out of the process's, which a real API would not share.
        self.serving_cpu_seconds = 0.0
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._fault_rng = random.Random(self.faults.seed)
        self._fault_rng_source = self.faults
        self._injections: list[_Injection] = []
        self._bodies: dict[tuple[date, int], bytes | _ItemsBody] = {}
        self._fragments: dict[int, tuple[str, bytes, int, int]] = {}
        self._cached_hand_edits = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind (port 0 picks a free one) and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections: no client goes on talking to a stopped server."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has no port until start() is called")
        return self._port

    @property
    def accelerate_base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}{ACCELERATE_BASE_PATH}"

    @property
    def qvalia_base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    # ---- the world -------------------------------------------------------------------------------------

    def advance_day(self) -> DayChanges:
        """The world's next business day, applied while no request is reading it."""
        return self.world.advance_day()

    def warm(self, since: date) -> None:
        """Serialize the body for `since` now, so a benchmark's first request measures only the client."""
        self._invoices_body(since)

    # ---- calls and faults ------------------------------------------------------------------------------

    def call_count(self, api: str | None = None, kind: str | None = None) -> int:
        """Requests received, all of them or those of one api and/or kind ("invoices_since", "status")."""
        with self._lock:
            return sum(
                count
                for (call_api, call_kind, _), count in self.calls.items()
                if (api is None or call_api == api) and (kind is None or call_kind == kind)
            )

    def reset_calls(self) -> None:
        """Forget the calls and faults served so far (between runs of one test)."""
        with self._lock:
            self.calls.clear()
            self.faults_served.clear()

    def inject(self, kind: FaultKind, times: int = 1, api: Api | None = None) -> None:
        """Make the next `times` requests to `api` (or to either) fail as `kind`, before any random fault.

        Kinds: an HTTP status ("400", "401", "403", "404", "429", "500", "502", "503") with the API's error
        body (429 with Retry-After); "drop" (full Content-Length, half the body, connection closed);
        "timeout" (stall faults.timeout_sleep_s, then answer); "html" (a 200 maintenance page, text/html).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(sorted(FAULT_KINDS))}")
        if api is not None and api not in APIS:
            raise ValueError(f"unknown api {api!r}; 'accelerate', 'qvalia' or None")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._injections.append(_Injection(kind, times, api))

    def inject_body(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = JSON_TYPE,
        times: int = 1,
        api: Api | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next `times` requests to `api` (or to either) answer `status` with exactly `body` as
        `content_type` (and any extra `headers`), instead of what the world says: bodies no world would
        serve (invalid UTF-8, an HTML page as JSON, the wrong shape, a truncated document). Served before
        any random fault, in order with `inject`, and counted in `faults_served` as "body"."""
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes: it is sent exactly as given")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        if api is not None and api not in APIS:
            raise ValueError(f"unknown api {api!r}; 'accelerate', 'qvalia' or None")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            response = _Response(status, body, content_type, tuple((headers or {}).items()))
            self._injections.append(_Injection("body", times, api, response))

    def reset_faults(self) -> None:
        """Drop pending injections and switch random faults and latency off (retry_after_s etc. stay)."""
        with self._lock:
            self._injections.clear()
            faults = self.faults
            faults.latency_s = faults.rate_429 = faults.rate_5xx = 0.0
            faults.rate_drop = faults.rate_timeout = 0.0

    def _take_fault(self, api: str) -> tuple[str | None, _Response | None]:
        """The fault this request gets, if any, and the fixed answer of an injected body."""
        with self._lock:
            kind = response = None
            for injection in self._injections:
                if injection.api in (None, api):
                    kind, response = injection.kind, injection.response
                    injection.times -= 1
                    if injection.times == 0:
                        self._injections.remove(injection)
                    break
            else:
                faults = self.faults
                if faults is not self._fault_rng_source:  # a new Faults object brings its own seed
                    self._fault_rng = random.Random(faults.seed)
                    self._fault_rng_source = faults
                if faults.rate_429 or faults.rate_5xx or faults.rate_drop or faults.rate_timeout:
                    draw = self._fault_rng.random()
                    if draw < faults.rate_429:
                        kind = "429"
                    elif draw < faults.rate_429 + faults.rate_5xx:
                        kind = self._fault_rng.choice(("500", "503"))
                    elif draw < faults.rate_429 + faults.rate_5xx + faults.rate_drop:
                        kind = "drop"
                    elif draw < faults.rate_429 + faults.rate_5xx + faults.rate_drop + faults.rate_timeout:
                        kind = "timeout"
            if kind is not None:
                self.faults_served[kind] += 1
            return kind, response

    # ---- requests --------------------------------------------------------------------------------------

    def _serve(self, handler: _Handler, method: str) -> None:
        """One request, its thread's CPU time added to `serving_cpu_seconds`: per thread, because requests
        are served at once on threads of their own, and only this share is the emulator's."""
        started = time.thread_time()
        try:
            self._answer(handler, method)
        finally:
            elapsed = time.thread_time() - started
            with self._lock:
                self.serving_cpu_seconds += elapsed

    def _answer(self, handler: _Handler, method: str) -> None:
        """Count the request, apply any fault, answer. Transport errors propagate (the client left)."""
        try:
            body = handler.read_body()
        except ValueError:
            handler.close_connection = True
            handler.send(_Response(400, dumps({"error": "Malformed request body"})))
            return
        path = urlsplit(handler.path).path
        api, kind, key, account = _route(path)
        with self._lock:
            self.calls[(api, kind or method, key)] += 1
        if api == "unknown":
            handler.send(_Response(404, _error_body("accelerate", "Not found")))
            return
        fault, injected = self._take_fault(api)
        if self.faults.latency_s > 0:
            self._stopping.wait(self.faults.latency_s)
        if injected is not None:
            handler.send(injected)
            return
        if fault is not None and fault in STATUS_FAULTS:
            headers = (("Retry-After", str(math.ceil(self.faults.retry_after_s))),) if fault == "429" else ()
            handler.send(_Response(int(fault), _error_body(api, FAULT_MESSAGES[fault]), headers=headers))
            return
        if fault == "html":
            handler.send(_Response(200, HTML_PAGE, content_type="text/html; charset=utf-8"))
            return
        if fault == "timeout":
            self._stopping.wait(self.faults.timeout_sleep_s)
        try:
            if api == "accelerate":
                response = self._accelerate(method, key, handler)
            elif kind == "status":
                response = self._qvalia_status(method, key, account, body, handler)
            else:
                response = self._qvalia_create(method, key, account, body, handler)
        except Exception:
            self.errors.append(traceback.format_exc())
            response = _Response(500, _error_body(api, "Emulator error"))
        handler.send(response, truncate=fault == "drop")

    def _accelerate(self, method: str, since_text: str, handler: _Handler) -> _Response:
        if method != "GET":
            return _Response(
                405, _error_body("accelerate", "Method not allowed"), headers=(("Allow", "GET"),)
            )
        if handler.headers.get("api-key") != self.accelerate_api_key:
            return _Response(404, _error_body("accelerate", "Not found"))
        try:
            if not DATE_PATTERN.fullmatch(since_text):
                raise ValueError(since_text)
            since = date.fromisoformat(since_text)
        except ValueError:
            return _Response(400, _error_body("accelerate", "Invalid date: expected YYYY-MM-DD"))
        return _Response(200, self._invoices_body(since))

    def _invoices_body(self, since: date) -> bytes | _ItemsBody:
        """The 200 body for `since`, from caches when the world is big.

        Bodies are cached per (since, world.version), invoices per (invoice_id, last_update_date): every
        change the world makes moves last_update_date, so after a business day only that day's invoices are
        encoded again. `world.mark_changed()` (after hand edits) empties both caches. A cached body holds
        the invoices' cached encodings, and one joined copy of them only up to JOINED_BODY_MAX_BYTES.
        """
        world = self.world
        with world.lock:
            if len(world.invoices) < CACHE_MIN_INVOICES:
                return items_body(world.invoices_since(since))
            if self._cached_hand_edits != world.hand_edits:
                self._bodies.clear()
                self._fragments.clear()
                self._cached_hand_edits = world.hand_edits
            key = (since, world.version)
            body = self._bodies.get(key)
            if body is None:
                self._bodies = {k: v for k, v in self._bodies.items() if k[1] == world.version}
                while len(self._bodies) >= CACHED_BODIES:
                    del self._bodies[next(iter(self._bodies))]
                body = self._encode_items(world.invoices_since(since))
                if len(body) <= JOINED_BODY_MAX_BYTES:
                    body = b"".join(body.buffers())
                self._bodies[key] = body
            return body

    def _encode_items(self, invoices: list[dict[str, Any]]) -> _ItemsBody:
        builder = _RunsBuilder(self._fragments)
        for invoice in invoices:
            builder.add(invoice)
        return _ItemsBody.of(builder.finish())

    def _qvalia_refusal(self, method: str, account: str, handler: _Handler) -> _Response | None:
        """Method, then key, then account: a wrong key learns nothing about which accounts exist."""
        if method != "POST":
            return _Response(405, _error_body("qvalia", "Method not allowed"), headers=(("Allow", "POST"),))
        if handler.headers.get("Authorization") != self.qvalia_api_key:
            return _Response(401, _error_body("qvalia", "Unauthorized"))
        if account != self.account_reg_no:
            return _Response(403, _error_body("qvalia", "No access to this account"))
        return None

    def _qvalia_status(
        self, method: str, integration_id: str, account: str, body: bytes, handler: _Handler
    ) -> _Response:
        refusal = self._qvalia_refusal(method, account, handler)
        if refusal is not None:
            return refusal
        if _json_object(body) is None:
            return _Response(400, _error_body("qvalia", "The request body must be a JSON object"))
        status = self.world.qvalia_status(integration_id)
        if status is None:
            return _Response(404, _error_body("qvalia", "Invoice not found"))
        data = {"message": "Invoice status retrieved", "status": status}
        return _Response(200, dumps({"status": "success", "data": data}))

    def _qvalia_create(
        self, method: str, order_id: str, account: str, body: bytes, handler: _Handler
    ) -> _Response:
        refusal = self._qvalia_refusal(method, account, handler)
        if refusal is not None:
            return refusal
        request = _json_object(body)
        send = request.get("send") if request is not None else None
        send_method = send.get("method") if isinstance(send, dict) else None
        if not isinstance(send_method, str):
            message = 'The request body must be {"send": {"method": "peppol" | "email" | "print"}}'
            return _Response(400, _error_body("qvalia", message))
        try:
            data = self.world.create_invoice_from_order(order_id, send_method)
        except OrderNotFound:
            return _Response(404, _error_body("qvalia", "Order not found"))
        except OrderAlreadyInvoiced:
            return _Response(
                409, _error_body("qvalia", "An invoice has already been created from this order")
            )
        except InvalidSendMethod:
            message = f"Unknown send method; one of {', '.join(SEND_METHODS)}"
            return _Response(400, _error_body("qvalia", message))
        return _Response(200, dumps({"status": "success", "data": data}))

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)


def _route(path: str) -> tuple[str, str, str, str]:
    """(api, kind, key, accountRegNo) for a path; segments are percent-decoded after splitting on '/'."""
    segments = [unquote(segment) for segment in path.split("/")]
    if len(segments) > 2 and segments[-1] == "":
        segments.pop()
    parts = segments[1:]
    if len(parts) == 7 and tuple(parts[:6]) == ACCELERATE_PREFIX:
        return "accelerate", "invoices_since", parts[6], ""
    if len(parts) >= 6 and parts[0] == "account" and parts[2:4] == ["action", "invoice"] and parts[-1]:
        if len(parts) == 7 and parts[4:6] == ["outgoing", "status"]:
            return "qvalia", "status", parts[6], parts[1]
        if len(parts) == 6 and parts[4] == "createandsend":
            return "qvalia", "createandsend", parts[5], parts[1]
    return "unknown", "", path, ""


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class _Handler(BaseHTTPRequestHandler):
    """Transport only: reads the request, hands it to the EmulatorServer, writes what it answers."""

    protocol_version = "HTTP/1.1"
    server_version = "InvoiceApiEmulator/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle plus delayed ACKs add ~40 ms per call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._connection_closed(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests and benchmarks should not scroll with one line per request."""

    def do_GET(self) -> None:
        self.server.emulator._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.emulator._serve(self, "POST")

    def do_PUT(self) -> None:
        self.server.emulator._serve(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.emulator._serve(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.emulator._serve(self, "DELETE")

    def read_body(self) -> bytes:
        """The whole request body (Content-Length or chunked), read so the connection can be reused."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def send(self, response: _Response, truncate: bool = False) -> None:
        """Write a response; with `truncate`, promise the full length, send half and hang up (a drop)."""
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        body = response.body
        limit = len(body) // 2 if truncate else len(body)
        if isinstance(body, _ItemsBody):
            _send_buffers(self.connection, body.buffers(), limit)
        else:
            self.wfile.write(memoryview(body)[:limit])
        if truncate:
            self.close_connection = True


def _send_buffers(connection: socket.socket, buffers: Iterable[bytes | memoryview], limit: int) -> None:
    """Send `buffers` in order and stop after `limit` bytes, gathering BUFFERS_PER_SEND into one sendmsg."""
    gathered: list[bytes | memoryview] = []
    left = limit
    for buffer in buffers:
        if left == 0:
            break
        if len(buffer) > left:
            buffer = memoryview(buffer)[:left]
        left -= len(buffer)
        gathered.append(buffer)
        if len(gathered) == BUFFERS_PER_SEND:
            _send_all(connection, gathered)
            gathered = []
    _send_all(connection, gathered)


def _send_all(connection: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Send every byte of `buffers`: sendmsg may stop part-way (a signal), and Windows has none."""
    if not _GATHERED_SENDS:
        for buffer in buffers:
            connection.sendall(buffer)
        return
    while buffers:
        sent = connection.sendmsg(buffers)
        done = 0
        while done < len(buffers) and sent >= len(buffers[done]):
            sent -= len(buffers[done])
            done += 1
        buffers = buffers[done:]
        if buffers and sent:
            buffers[0] = memoryview(buffers[0])[sent:]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can stall for seconds."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-response is normal here (drops, timeouts); anything else is kept."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            self.emulator.errors.append(traceback.format_exc())
