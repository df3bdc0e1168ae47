"""Validate the `sources.qvalia` settings before any request is made, one clear line per mistake."""

from __future__ import annotations

import re

from pipelines.errors import ConfigurationError
from pipelines.http import validate_base_url
from pipelines.qvalia import settings

SECTION = "sources.qvalia"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def resolve_base_url(environment: str | None, base_url: str | None) -> str:
    if base_url:
        return validate_base_url(str(base_url), f"{SECTION}.base_url")
    name = (environment or settings.DEFAULT_ENVIRONMENT).strip().lower()
    if name not in settings.BASE_URLS:
        raise ConfigurationError(
            f"{SECTION}.environment must be one of {', '.join(settings.BASE_URLS)}, got {environment!r}"
        )
    return settings.BASE_URLS[name]


def check_account_reg_no(value: str | None) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise ConfigurationError(
            f"{SECTION}.account_reg_no is not set: put your Qvalia account's registration number in "
            ".dlt/config.toml or SOURCES__QVALIA__ACCOUNT_REG_NO"
        )
    if any(char.isspace() or char == "/" for char in text) or text in (".", ".."):
        raise ConfigurationError(f"{SECTION}.account_reg_no must be a single token such as 5567321707")
    return text


def check_integration_id_field(value: str | None) -> str:
    name = (value or settings.DEFAULT_INTEGRATION_ID_FIELD).strip()
    if not _IDENTIFIER.match(name):
        raise ConfigurationError(f"{SECTION}.integration_id_field must be a column name, got {value!r}")
    return name


def check_max_concurrency(value: int | str | None) -> int:
    if value is None or value == "":
        return settings.DEFAULT_MAX_CONCURRENCY
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= settings.MAX_CONCURRENCY_LIMIT:
        raise ConfigurationError(
            f"{SECTION}.max_concurrency must be a whole number from 1 to {settings.MAX_CONCURRENCY_LIMIT}, "
            f"got {value!r}"
        )
    return number
