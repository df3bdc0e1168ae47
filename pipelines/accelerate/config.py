"""Validate the `sources.accelerate` settings before any request is made, one clear line per mistake."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipelines.accelerate import settings
from pipelines.errors import ConfigurationError
from pipelines.http import validate_base_url

_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SECTION = "sources.accelerate"


@dataclass(frozen=True)
class AccelerateSettings:
    base_url: str
    start_date: date
    lookback_days: int
    timezone: str


def resolve_settings(
    subdomain: str | None,
    base_url: str | None,
    start_date: str | date | None,
    lookback_days: int | str | None,
    timezone: str | None,
) -> AccelerateSettings:
    return AccelerateSettings(
        base_url=resolve_base_url(subdomain, base_url),
        start_date=parse_start_date(start_date),
        lookback_days=parse_lookback_days(lookback_days),
        timezone=check_timezone(timezone),
    )


def resolve_base_url(subdomain: str | None, base_url: str | None) -> str:
    if base_url:
        return validate_base_url(str(base_url), f"{SECTION}.base_url")
    if not subdomain:
        raise ConfigurationError(
            f"{SECTION}.subdomain is not set: set it (or base_url) in .dlt/config.toml "
            "or SOURCES__ACCELERATE__SUBDOMAIN"
        )
    label = str(subdomain).strip()
    if not _DNS_LABEL.match(label):
        raise ConfigurationError(
            f"{SECTION}.subdomain must be a plain DNS label such as 'acme' (letters, digits, hyphens), "
            f"got {label!r}"
        )
    return settings.BASE_URL_TEMPLATE.format(subdomain=label.lower())


def parse_start_date(value: str | date | None) -> date:
    if value is None or value == "":
        return settings.DEFAULT_START_DATE
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigurationError(
            f"{SECTION}.start_date must be a date as YYYY-MM-DD, got {value!r}"
        ) from None


def parse_lookback_days(value: int | str | None) -> int:
    if value is None or value == "":
        return settings.DEFAULT_LOOKBACK_DAYS
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = -1
    if days < 0 or str(value).strip() not in (str(days), f"+{days}"):
        raise ConfigurationError(
            f"{SECTION}.lookback_days must be a whole number of days >= 0, got {value!r}"
        )
    return days


def check_timezone(value: str | None) -> str:
    name = (value or settings.DEFAULT_TIMEZONE).strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{SECTION}.timezone must be an IANA zone name such as 'Europe/London', got {name!r}"
        ) from None
    return name
