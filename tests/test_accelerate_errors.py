"""Errors and faults: each refusal gives one line naming the setting; transient faults are retried until
the run converges; a run that gives up leaves the tables and the cursor as they were."""

from __future__ import annotations

import time

import pytest

from pipelines.emulator import World
from pipelines.errors import (
    ApiRequestError,
    ApiResponseError,
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
)

from conftest import Harness


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.05")
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "4")


def _cursor(harness: Harness) -> str | None:
    state = harness.pipeline.state.get("sources", {}).get("accelerate", {})
    return state.get("resources", {}).get("invoice", {}).get("last_update_date")


def test_wrong_api_key_gives_one_line_naming_the_settings(harness: Harness) -> None:
    with pytest.raises(ApiRequestError) as raised:
        harness.run(api_key="wrong-key-SECRET-9f8e7d")
    message = str(raised.value)
    assert "404" in message and "sources.accelerate.subdomain" in message and "api_key" in message
    assert "\n" not in message and "SECRET" not in message


@pytest.mark.parametrize(
    ("status", "error_type", "setting"),
    [
        ("400", ApiRequestError, "sources.accelerate.start_date"),
        ("401", AuthenticationError, "sources.accelerate.api_key"),
        ("403", AuthenticationError, "sources.accelerate.api_key"),
    ],
)
def test_refusals_name_the_setting_to_fix(
    harness: Harness, status: str, error_type: type, setting: str
) -> None:
    harness.server.inject(status, times=1, api="accelerate")
    with pytest.raises(error_type) as raised:
        harness.run()
    assert setting in str(raised.value) and "\n" not in str(raised.value)
    assert harness.server.call_count(api="accelerate") == 1, "a refusal is not retried"


@pytest.mark.parametrize("fault", ["429", "500", "503", "drop"])
def test_transient_faults_are_retried_until_the_run_converges(
    harness: Harness, world: World, fault: str
) -> None:
    harness.server.inject(fault, times=2, api="accelerate")
    harness.run()
    harness.assert_equals_world(world)
    assert harness.server.faults_served[fault] == 2


def test_429_retry_after_is_honoured(harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.server.faults.retry_after_s = 1
    harness.server.inject("429", times=1, api="accelerate")
    started = time.monotonic()
    harness.run()
    assert time.monotonic() - started >= 1.0
    harness.assert_equals_world(world)


def test_a_read_timeout_is_retried(harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_TIMEOUT", "0.5")
    harness.server.inject("timeout", times=1, api="accelerate")
    harness.run()
    harness.assert_equals_world(world)


def test_giving_up_leaves_tables_and_cursor_as_they_were(harness: Harness, world: World) -> None:
    harness.run()
    before_rows = harness.query("SELECT count(*), max(_dlt_load_id) FROM billing.invoice")
    cursor = _cursor(harness)
    world.advance_day()
    harness.server.inject("503", times=10, api="accelerate")
    with pytest.raises(ApiUnavailableError) as raised:
        harness.run()
    assert "gave up after 4 attempts" in str(raised.value) and "\n" not in str(raised.value)
    assert harness.query("SELECT count(*), max(_dlt_load_id) FROM billing.invoice") == before_rows
    assert _cursor(harness) == cursor
    harness.server.reset_faults()
    harness.run()
    harness.assert_equals_world(world)


def test_an_html_page_with_status_200_loads_nothing(harness: Harness) -> None:
    harness.server.inject("html", times=1, api="accelerate")
    with pytest.raises(ApiResponseError) as raised:
        harness.run()
    assert "HTML" in str(raised.value)
    assert _cursor(harness) is None


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"base_url": None, "subdomain": "acme.evil.com/x"}, "sources.accelerate.subdomain"),
        ({"base_url": "http://accounts.example.com/api/v2"}, "sources.accelerate.base_url must use https"),
        ({"start_date": "2024-13-01"}, "sources.accelerate.start_date"),
        ({"lookback_days": "-1"}, "sources.accelerate.lookback_days"),
        ({"timezone": "Mars/Olympus"}, "sources.accelerate.timezone"),
    ],
)
def test_bad_settings_fail_before_any_request(harness: Harness, settings: dict, named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        harness.run(**settings)
    assert named in str(raised.value)
    assert harness.server.call_count(api="accelerate") == 0


def test_random_faults_over_business_days_still_converge(harness: Harness, world: World) -> None:
    faults = harness.server.faults
    faults.rate_429, faults.rate_5xx, faults.rate_drop, faults.retry_after_s = 0.15, 0.15, 0.1, 0
    for day in range(4):
        if day:
            world.advance_day()
        for _attempt in range(5):  # a scheduler reruns a run that gave up
            try:
                harness.run()
                break
            except ApiUnavailableError:
                continue
        harness.assert_equals_world(world)
    assert sum(harness.server.faults_served.values()) > 0
