"""What both API clients share: base-URL checks, the retry policy and how a transient failure is told apart.

It knows nothing of dlt or of either API's paths; `accelerate.client` and `qvalia.client` build on it.
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import dlt
import requests

from pipelines.errors import ApiUnavailableError, ConfigurationError

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "invoice-pipelines/0.1 (+dlt)"


def is_loopback_host(host: str) -> bool:
    """Loopback is the only place plain http is allowed: the emulator and local tunnels live there."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str, setting: str) -> str:
    """Refuse anything but https on a real host, so an API key never crosses the network in clear text."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{setting} must be an absolute http(s) URL, got {url!r}")
    if parts.username or parts.password:
        raise ConfigurationError(f"{setting} must not carry credentials; put the key in the api_key setting")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{setting} must not have a query string or fragment, got {url!r}")
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"{setting} must use https for a non-loopback host ({parts.hostname})")
    return url.strip().rstrip("/")


class TransientError(Exception):
    """A failure worth retrying; `retry_after` is the server's own wait in seconds, when it gave one."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def transient_for_status(response: requests.Response, api: str) -> TransientError:
    return TransientError(
        f"{api} answered HTTP {response.status_code}",
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


class Throttle:
    """A pause shared by every worker of one client: a 429's Retry-After slows them all, not just the one
    that was told, so a concurrent poller does not keep hammering an API that asked it to wait."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._sleep = sleep

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def wait(self) -> None:
        while True:
            with self._lock:
                remaining = self._resume_at - time.monotonic()
            if remaining <= 0:
                return
            self._sleep(remaining)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter; a server's Retry-After wins when longer.

    `max_attempts` counts the first try. `max_delay` caps one wait, including a Retry-After, so a
    misbehaving server cannot park a scheduled job for hours. The defaults are dlt's own
    (`[runtime] request_*`), and `from_dlt_config` reads those keys, so users tune one set of settings.
    """

    max_attempts: int = 5
    backoff_base: float = 1.0
    max_delay: float = 300.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_dlt_config(cls) -> RetryPolicy:
        """Read `runtime.request_max_attempts`, `request_backoff_factor`, `request_max_retry_delay` and
        `request_timeout` from dlt's config providers (toml files or RUNTIME__REQUEST_... variables)."""
        values = {
            "max_attempts": ("request_max_attempts", int),
            "backoff_base": ("request_backoff_factor", float),
            "max_delay": ("request_max_retry_delay", float),
            "read_timeout": ("request_timeout", float),
        }
        resolved: dict[str, float | int] = {}
        for field_name, (key, kind) in values.items():
            raw = dlt.config.get(f"runtime.{key}")
            if raw is None:
                continue
            try:
                resolved[field_name] = kind(raw)
            except (TypeError, ValueError):
                raise ConfigurationError(f"runtime.{key} must be a number, got {raw!r}") from None
            if resolved[field_name] < (1 if key == "request_max_attempts" else 0):
                raise ConfigurationError(f"runtime.{key} is out of range: {raw!r}")
        return cls(**resolved)  # type: ignore[arg-type]

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, self.backoff_base * (2 ** (attempt - 1)))
        wanted = max(backoff, retry_after or 0.0)
        return min(wanted, self.max_delay)

    def call(
        self,
        operation: Callable[[], T],
        what: str,
        on_retry: Callable[[TransientError, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        throttle: Throttle | None = None,
    ) -> T:
        """Run `operation`, retrying on `TransientError` and on requests' network errors."""
        for attempt in range(1, self.max_attempts + 1):
            if throttle is not None:
                throttle.wait()
            try:
                return operation()
            except requests.Timeout:
                error = TransientError(f"{what} timed out")
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                error = TransientError(f"{what}: the connection failed or was cut mid-response")
            except TransientError as transient:
                error = transient
            if attempt == self.max_attempts:
                raise ApiUnavailableError(
                    f"{error.description}; gave up after {self.max_attempts} attempts: run the job again later"
                )
            wait = self.delay(attempt, error.retry_after)
            if throttle is not None and error.retry_after:
                throttle.pause(wait)
            if on_retry is not None:
                on_retry(error, wait)
            sleep(wait)
        raise AssertionError("unreachable")
