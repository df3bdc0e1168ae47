"""HTTP for Qvalia's Get status and Create from Order: auth header, path encoding, retries, error mapping.

Safe to share between threads (one pooled session; a shared `Throttle` so one 429 slows every worker).
Create from Order is never retried blindly: an answer lost after the request was sent may mean the
invoice exists, so the caller is told the outcome is unknown and checks the status instead.
It knows nothing of dlt.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from pipelines.accelerate.surrogates import unpaired_surrogate_offset
from pipelines.errors import ApiRequestError, ApiResponseError, AuthenticationError, PipelineError
from pipelines.http import (
    RETRYABLE_STATUS,
    USER_AGENT,
    RetryPolicy,
    Throttle,
    TransientError,
    transient_for_status,
)
from pipelines.qvalia import settings

logger = logging.getLogger(__name__)

API = "Qvalia"


class OrderNotFoundError(ApiRequestError):
    """Qvalia does not know the order (404): the id is wrong or the order is not in this account."""


class OrderRefusedError(ApiRequestError):
    """Qvalia refused to invoice the order (400, 409...): the reason is in the message."""


class OutcomeUnknownError(PipelineError):
    """The create request was sent but its answer was lost: the invoice may or may not exist."""


@dataclass(frozen=True)
class CreatedInvoice:
    message: str | None
    invoice: Any


def encode_segment(value: str) -> str:
    """One path segment, whatever it holds: `/` is encoded and so is `.`, so `..` can never climb."""
    text = str(value)
    if not text:
        raise ApiRequestError(f"{API}: an empty integration id cannot be sent")
    return quote(text, safe="").replace(".", "%2E")


class QvaliaClient:
    """One configured connection to a Qvalia account; `get_status` may be called from many threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        account_reg_no: str,
        retry: RetryPolicy | None = None,
        pool_size: int = settings.DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_reg_no = account_reg_no
        self.retry = retry or RetryPolicy.from_dlt_config()
        self.throttle = Throttle()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {settings.API_KEY_HEADER: api_key, "Accept": "application/json", "User-Agent": USER_AGENT}
        )
        self._status_method = "POST"
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0

    def status_url(self, integration_id: str) -> str:
        return self.base_url + settings.STATUS_PATH.format(
            account=encode_segment(self.account_reg_no), integration_id=encode_segment(integration_id)
        )

    def create_url(self, integration_id: str) -> str:
        return self.base_url + settings.CREATE_PATH.format(
            account=encode_segment(self.account_reg_no), integration_id=encode_segment(integration_id)
        )

    def get_status(self, integration_id: str) -> dict[str, Any] | None:
        """The outgoing invoice's status object, or None when Qvalia does not know the id (404)."""
        return self.retry.call(
            lambda: self._get_status_once(integration_id),
            f"{API} status of {integration_id}",
            on_retry=self._log_retry,
            throttle=self.throttle,
        )

    def create_invoice_from_order(self, integration_id: str, send_method: str) -> CreatedInvoice:
        """Create and send the invoice of an incoming order. Retried only when the request provably did not
        reach Qvalia (429, a refused connection); otherwise an unclear ending raises OutcomeUnknownError."""
        return self.retry.call(
            lambda: self._create_once(integration_id, send_method),
            f"{API} create from order {integration_id}",
            on_retry=self._log_retry,
            throttle=self.throttle,
        )

    def close(self) -> None:
        self._session.close()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def _log_retry(self, error: TransientError, wait: float) -> None:
        with self._lock:
            self.retries += 1
        logger.warning("%s; retrying in %.1f s", error.description, wait)

    def _get_status_once(self, integration_id: str) -> dict[str, Any] | None:
        url = self.status_url(integration_id)
        self._count()
        try:
            response = self._session.request(self._status_method, url, json={}, timeout=self.retry.timeout)
            if response.status_code == 405 and self._status_method == "POST":
                # One public client calls this path with GET; accept a server that only takes that.
                self._status_method = "GET"
                self._count()
                response = self._session.get(url, timeout=self.retry.timeout)
        except requests.exceptions.ContentDecodingError:
            raise ApiResponseError(
                f"{API} sent the status of {integration_id} in a body that does not match its "
                "Content-Encoding header: nothing was loaded"
            ) from None
        if response.status_code == 404:
            return None
        self._raise_for_refusal(response, f"the status of {integration_id}")
        return _status_object(_json(response), integration_id)

    def _create_once(self, integration_id: str, send_method: str) -> CreatedInvoice:
        url = self.create_url(integration_id)
        body = {"send": {"method": send_method}}
        self._count()
        try:
            response = self._session.post(url, json=body, timeout=self.retry.timeout)
        except requests.exceptions.ConnectionError as error:
            if _never_sent(error):
                raise
            raise OutcomeUnknownError(
                f"{API}: the connection broke while creating the invoice of order {integration_id}; "
                "it may exist: nothing was retried"
            ) from None
        except requests.exceptions.ContentDecodingError:
            raise OutcomeUnknownError(
                f"{API} answered the creation of the invoice of order {integration_id} with a body that "
                "does not match its Content-Encoding header; it may exist: nothing was retried"
            ) from None
        except requests.Timeout:
            raise OutcomeUnknownError(
                f"{API}: no answer in time while creating the invoice of order {integration_id}; "
                "it may exist: nothing was retried"
            ) from None
        if response.status_code == 429:
            raise transient_for_status(response, API)
        if response.status_code >= 500:
            raise OutcomeUnknownError(
                f"{API} answered HTTP {response.status_code} while creating the invoice of order "
                f"{integration_id}; it may exist: nothing was retried"
            )
        if response.status_code == 404:
            raise OrderNotFoundError(f"{API} does not know order {integration_id} (404): check the id")
        if response.status_code in (401, 403):
            self._raise_for_refusal(response, f"order {integration_id}")
        if response.status_code != 200:
            reason = _message(response) or f"HTTP {response.status_code}"
            raise OrderRefusedError(f"{API} refused to invoice order {integration_id}: {reason}")
        data = _json(response).get("data")
        if not isinstance(data, dict):
            raise ApiResponseError(f"{API} answered create for {integration_id} without a data object")
        inner = data.get("data")
        invoice = inner.get("invoice") if isinstance(inner, dict) else None
        if isinstance(invoice, dict) and set(invoice) == {"Invoice"}:
            invoice = invoice["Invoice"]
        return CreatedInvoice(message=data.get("message"), invoice=invoice)

    def _raise_for_refusal(self, response: requests.Response, what: str) -> None:
        status = response.status_code
        if status in RETRYABLE_STATUS:
            raise transient_for_status(response, API)
        if status == 401:
            raise AuthenticationError(f"{API} refused the API key (HTTP 401): check sources.qvalia.api_key")
        if status == 403:
            raise AuthenticationError(
                f"{API} refused access (HTTP 403): check sources.qvalia.account_reg_no and that "
                "sources.qvalia.api_key belongs to that account"
            )
        if status != 200:
            reason = _message(response) or "no reason given"
            raise ApiRequestError(f"{API} answered HTTP {status} for {what}: {reason}")


def _never_sent(error: requests.exceptions.ConnectionError) -> bool:
    """True when the connection could not be opened, so the request cannot have reached the server."""
    text = repr(error)
    return "NewConnectionError" in text or "Connection refused" in text or "ConnectTimeout" in text


def _json(response: requests.Response) -> dict[str, Any]:
    """The body as JSON, read strictly: requests would turn bytes that are not UTF-8 into U+FFFD, and
    json keeps half a surrogate pair, which no database stores as text; both are refused in one line."""
    try:
        text = response.content.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiResponseError(
            f"{API} answered {response.status_code} with bytes that are not UTF-8: nothing was loaded"
        ) from None
    if "\\u" in text and unpaired_surrogate_offset(io.BytesIO(response.content)) is not None:
        raise ApiResponseError(
            f"{API} sent a string holding half of a UTF-16 surrogate pair, which cannot be stored as text: "
            "nothing was loaded"
        )
    try:
        document = json.loads(text)
    except ValueError:
        start = response.text[:1].strip()
        kind = "an HTML page" if start == "<" else "a body that is not JSON"
        raise ApiResponseError(
            f"{API} answered {response.status_code} with {kind}: check the base_url"
        ) from None
    if not isinstance(document, dict):
        raise ApiResponseError(f"{API} answered with JSON of the wrong shape (not an object)")
    return document


def _status_object(document: dict[str, Any], integration_id: str) -> dict[str, Any]:
    """`data.status` per the seed; a flat `data` holding the fields is read the same way."""
    data = document.get("data")
    if isinstance(data, dict):
        if isinstance(data.get("status"), dict):
            return data["status"]
        if isinstance(data.get("status"), str):
            return data
    raise ApiResponseError(
        f"{API} answered the status of {integration_id} without a status object (data.status)"
    )


def _message(response: requests.Response) -> str | None:
    """The API's own reason, shortened: it names the order or the method, never a credential."""
    try:
        document = response.json()
    except ValueError:
        return None
    if isinstance(document, dict):
        data = document.get("data")
        for candidate in (
            data.get("message") if isinstance(data, dict) else None,
            document.get("message"),
            document.get("error"),
        ):
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()[:200]
    return None
