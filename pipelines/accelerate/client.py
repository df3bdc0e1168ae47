"""HTTP for Accelerate's `GET /invoices/since/{date}/`: auth header, retries, error mapping, streaming parse.

The body is spooled to a temporary file while it downloads (so a truncated body is retried whole, and memory
stays flat); `pipelines.accelerate.reader` reads it, the fast way where it can, else with the general
streaming parser here (ijson: numbers come back as `int` or `Decimal`, never float). It knows nothing of
dlt.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from datetime import date
from typing import IO, Any

import ijson
import requests

from pipelines.accelerate import settings
from pipelines.accelerate.schema import LINES_FIELD
from pipelines.accelerate.surrogates import unpaired_surrogate_offset
from pipelines.errors import ApiRequestError, ApiResponseError, ApiUnavailableError, AuthenticationError
from pipelines.http import RETRYABLE_STATUS, USER_AGENT, RetryPolicy, TransientError, transient_for_status

logger = logging.getLogger(__name__)

API = "Accelerate"


class AccelerateClient:
    """One configured connection to an Accelerate account."""

    def __init__(self, base_url: str, api_key: str, retry: RetryPolicy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy.from_dlt_config()
        self._session = requests.Session()
        self._session.headers.update(
            {settings.API_KEY_HEADER: api_key, "Accept": "application/json", "User-Agent": USER_AGENT}
        )
        self.retries = 0

    def invoices_since_url(self, since: date) -> str:
        return self.base_url + settings.INVOICES_SINCE_PATH.format(date=since.isoformat())

    def download_invoices_since(self, since: date) -> IO[bytes]:
        """The whole body of invoices since `since`, spooled to a temporary file (the caller closes it)."""
        try:
            return self.retry.call(
                lambda: self._download(since), f"{API} GET invoices since {since}", on_retry=self._log_retry
            )
        except ApiUnavailableError as error:
            raise ApiUnavailableError(f"{error}; nothing was loaded and the cursor is unchanged") from None

    def close(self) -> None:
        self._session.close()

    def _log_retry(self, error: TransientError, wait: float) -> None:
        self.retries += 1
        logger.warning("%s; retrying in %.1f s", error.description, wait)

    def _download(self, since: date) -> IO[bytes]:
        url = self.invoices_since_url(since)
        with self._session.get(url, stream=True, timeout=self.retry.timeout) as response:
            if response.status_code in RETRYABLE_STATUS:
                raise transient_for_status(response, API)
            if response.status_code != 200:
                raise _refusal(response.status_code, since)
            spool = tempfile.TemporaryFile(prefix="accelerate-invoices-")  # noqa: SIM115 - returned open
            try:
                for chunk in response.iter_content(chunk_size=settings.DOWNLOAD_CHUNK_BYTES):
                    spool.write(chunk)
            except requests.exceptions.ContentDecodingError:
                spool.close()
                raise ApiResponseError(
                    f"{API} sent a body that does not match its Content-Encoding header "
                    f"({response.headers.get('Content-Encoding')}): nothing was loaded"
                ) from None
            except BaseException:
                spool.close()
                raise
        spool.seek(0)
        return spool


def _refusal(status: int, since: date) -> Exception:
    if status in (401, 403):
        return AuthenticationError(
            f"{API} refused the API key (HTTP {status}): check sources.accelerate.api_key"
        )
    if status == 404:
        return ApiRequestError(
            f"{API} answered 404 (not found or no permission): check sources.accelerate.subdomain "
            "(or base_url) and that sources.accelerate.api_key may read invoices"
        )
    if status == 400:
        return ApiRequestError(
            f"{API} rejected the request for invoices since {since} (HTTP 400): "
            "check sources.accelerate.start_date (YYYY-MM-DD) and base_url"
        )
    return ApiRequestError(
        f"{API} answered HTTP {status} for invoices since {since}: check sources.accelerate"
    )


def _parse_items(body: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Yield the objects of `{"items": [...]}`; a bare top-level array is read the same way. The caller has
    refused half surrogate pairs first (`_refuse_unpaired_surrogates`), which ijson would turn into "?"."""
    count = 0
    try:
        for item in ijson.items(body, "items.item", use_float=False):
            count += 1
            yield _as_mapping(item)
        if count:
            return
        body.seek(0)
        shape = _top_level_shape(body)
        if shape == "array":
            body.seek(0)
            for item in ijson.items(body, "item", use_float=False):
                yield _as_mapping(item)
        elif shape != "object-with-items":
            raise ApiResponseError(
                f'{API} answered 200 with JSON of the wrong shape ({shape}); expected {{"items": [...]}}. '
                "Nothing was loaded: check sources.accelerate.base_url points at the API v2 root"
            )
    except (ijson.JSONError, UnicodeDecodeError) as error:
        body.seek(0)
        start = body.read(40).decode("utf-8", "replace").strip()
        kind = "an HTML page" if start.startswith("<") else "a body that is not valid JSON"
        raise ApiResponseError(
            f"{API} answered 200 with {kind} ({_parser_reason(error)}). Nothing was loaded: "
            "check sources.accelerate.base_url points at the API v2 root"
        ) from None


def _parser_reason(error: Exception) -> str:
    """The parser's first line ("lexical error: invalid bytes in UTF8 string."), without the excerpt of the
    body it prints below it: one line, and no invoice data in a log."""
    if isinstance(error, UnicodeDecodeError):
        return "invalid UTF-8 in a string"
    text = error.args[0] if error.args else ""
    if isinstance(text, bytes):  # yajl's message quotes the body's bytes as they were
        text = text.decode("utf-8", "replace")
    lines = str(text).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else type(error).__name__


def _refuse_unpaired_surrogates(body: IO[bytes]) -> None:
    """Fail on a string holding half a surrogate pair (see `surrogates`): a replacement character would
    not be what was sent."""
    body.flush()
    offset = unpaired_surrogate_offset(body)
    if offset is not None:
        raise ApiResponseError(
            f"{API} sent a string holding half of a UTF-16 surrogate pair (a \\u escape in D800-DFFF at "
            f"byte {offset:,}), which cannot be stored as text: nothing was loaded"
        )


def _top_level_shape(body: IO[bytes]) -> str:
    """Name the document's outline from its first events, without building it."""
    events = ijson.parse(body)
    for prefix, event, _value in events:
        if prefix == "" and event == "start_array":
            return "array"
        if prefix == "" and event == "start_map":
            for inner_prefix, inner_event, inner_value in events:
                if inner_prefix == "" and inner_event == "map_key" and inner_value == "items":
                    _, kind, _ = next(events)
                    return "object-with-items" if kind in ("start_array", "null") else f"items is {kind}"
            return "an object without items"
        return f"a bare {event}"
    return "empty"


def _as_mapping(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ApiResponseError(
            f"{API} returned an item that is not an object ({type(item).__name__}) in items: nothing was loaded"
        )
    lines = item.get(LINES_FIELD)
    if lines is not None and not isinstance(lines, list):
        raise ApiResponseError(
            f"{API} sent {LINES_FIELD} as {type(lines).__name__} rather than a list in invoice "
            f"{str(item.get('invoice_id'))[:20]}: nothing was loaded"
        )
    return item
