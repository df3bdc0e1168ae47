"""The Qvalia source: e-invoice statuses of the open Accelerate sales invoices, and their history.

Which ids are polled is read from the destination of the pipeline that runs the source: every Accelerate
sales invoice (purchase invoices are not outgoing) whose last known status is not final (paid or
cancelled). So the calls per run grow with the open invoices, not with the history. An id Qvalia does not
know yet (404) is counted and polled again next run. A history row is written only when a status object
differs from the last one stored (the first observation counts), keyed so that a rerun cannot repeat it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dlt
from dlt.sources import DltResource

from pipelines.errors import ApiResponseError, ApiUnavailableError
from pipelines.qvalia import settings
from pipelines.qvalia.client import QvaliaClient
from pipelines.qvalia.config import (
    check_account_reg_no,
    check_integration_id_field,
    check_max_concurrency,
    resolve_base_url,
)
from pipelines.qvalia.destination import KnownStatus, open_invoices

__all__ = ["QvaliaClient", "invoice_status", "make_client", "poll_statuses", "qvalia_source"]

logger = logging.getLogger(__name__)


def _timestamp_column(name: str) -> dict[str, Any]:
    return {"name": name, "data_type": "timestamp", "timezone": True, "precision": 6, "nullable": True}


STATUS_COLUMNS: dict[str, Any] = {
    "integration_id": {"name": "integration_id", "data_type": "text", "nullable": False},
    **{name: {"name": name, "data_type": "text", "nullable": True} for name in settings.STATUS_FIELDS},
    **{name: _timestamp_column(name) for name in settings.STATUS_TIMESTAMPS},
    "checked_at": _timestamp_column("checked_at"),
    "fingerprint": {"name": "fingerprint", "data_type": "text", "nullable": True},
}
HISTORY_COLUMNS: dict[str, Any] = {
    **{name: column for name, column in STATUS_COLUMNS.items() if name != "checked_at"},
    "first_seen_at": _timestamp_column("first_seen_at"),
    "fingerprint": {"name": "fingerprint", "data_type": "text", "nullable": False},
}
# insert-only on (integration_id, fingerprint): a change is stored once, the first time it is seen.
HISTORY_HINTS = dlt.mark.make_hints(
    table_name="invoice_status_history",
    write_disposition={"disposition": "merge", "strategy": "insert-only"},
    primary_key=["integration_id", "fingerprint"],
    columns=HISTORY_COLUMNS,
)


def make_client(
    api_key: str,
    account_reg_no: str | None,
    environment: str | None = None,
    base_url: str | None = None,
    max_concurrency: int | str | None = None,
) -> QvaliaClient:
    """A client from the contract's settings, each validated with a one-line error."""
    return QvaliaClient(
        resolve_base_url(environment, base_url),
        api_key,
        check_account_reg_no(account_reg_no),
        pool_size=check_max_concurrency(max_concurrency),
    )


@dlt.source(name="qvalia", max_table_nesting=0)
def qvalia_source(
    api_key: str = dlt.secrets.value,
    account_reg_no: str | None = None,
    environment: str | None = None,
    base_url: str | None = None,
    integration_id_field: str | None = None,
    max_concurrency: int | None = None,
    poll_final: bool = False,
) -> DltResource:
    """Statuses of the open sales invoices. `poll_final` also polls those already paid or cancelled."""
    client = make_client(api_key, account_reg_no, environment, base_url, max_concurrency)
    return invoice_status(
        client,
        check_integration_id_field(integration_id_field),
        check_max_concurrency(max_concurrency),
        poll_final,
    )


@dlt.resource(
    name="invoice_status", primary_key="integration_id", write_disposition="merge", columns=STATUS_COLUMNS
)
def invoice_status(
    client: QvaliaClient, integration_id_field: str, max_concurrency: int, poll_final: bool = False
) -> Iterator[Any]:
    """One row per polled id in `invoice_status`; a row in `invoice_status_history` per change seen."""
    state = dlt.current.resource_state()
    selection = open_invoices(dlt.current.pipeline(), integration_id_field, include_final=poll_final)
    figures = {"polled": len(selection.to_poll), "final_skipped": selection.final_skipped}
    figures.update(unknown=0, failed=0, changed=0)
    logger.info(
        "qvalia: polling %s open sales invoices (%s final ones skipped)",
        f"{len(selection.to_poll):,}",
        f"{selection.final_skipped:,}",
    )
    try:
        for integration_id, status, error in poll_statuses(client, selection.to_poll, max_concurrency):
            if error is not None:
                figures["failed"] += 1
                logger.warning("qvalia: %s (%s polled again next run)", error, integration_id)
                continue
            if status is None:
                figures["unknown"] += 1
                continue
            checked_at = dt.datetime.now(dt.UTC)
            row = status_row(integration_id, status, checked_at)
            yield row
            if _changed(selection.previous.get(integration_id), row):
                figures["changed"] += 1
                history = {k: v for k, v in row.items() if k != "checked_at"} | {"first_seen_at": checked_at}
                yield dlt.mark.with_hints(history, HISTORY_HINTS, create_table_variant=True)
    finally:
        client.close()
    figures.update(calls=client.calls, retries=client.retries)
    state[settings.STATE_LAST_RUN] = figures
    logger.info("qvalia: %s", ", ".join(f"{key} {value:,}" for key, value in figures.items()))


def status_row(integration_id: str, status: dict[str, Any], checked_at: dt.datetime) -> dict[str, Any]:
    """The status object's fields under their own names (unknown ones too), timestamps in UTC."""
    row: dict[str, Any] = {"integration_id": integration_id}
    for name in settings.STATUS_FIELDS:
        row[name] = status.get(name)
    for name, value in status.items():
        if name not in row:
            row[name] = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
    for name in settings.STATUS_TIMESTAMPS:
        try:
            row[name] = _utc(row[name])
        except (TypeError, ValueError):
            raise ApiResponseError(
                f"Qvalia sent {str(row[name])[:40]!r} in {name} of {integration_id}, which is not an ISO 8601 "
                "timestamp; nothing from this run was loaded"
            ) from None
    row["checked_at"] = checked_at
    row["fingerprint"] = fingerprint(status)
    return row


def fingerprint(status: dict[str, Any]) -> str:
    canonical = json.dumps(status, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _changed(previous: KnownStatus | None, row: dict[str, Any]) -> bool:
    return previous is None or previous.fingerprint != row["fingerprint"]


def poll_statuses(
    client: QvaliaClient, integration_ids: list[str], max_concurrency: int
) -> Iterator[tuple[str, dict[str, Any] | None, ApiUnavailableError | None]]:
    """Bounded concurrent polling, results in id order. An id the API kept failing is reported, not fatal;
    a refused key (AuthenticationError) stops everything at once."""

    def poll_one(integration_id: str) -> tuple[str, dict[str, Any] | None, ApiUnavailableError | None]:
        try:
            return integration_id, client.get_status(integration_id), None
        except ApiUnavailableError as error:
            return integration_id, None, error

    executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="qvalia-status")
    try:
        yield from executor.map(poll_one, integration_ids)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _utc(value: Any) -> dt.datetime | None:
    """ISO 8601 with an offset, as the API sends; a naive one is taken as UTC (the API is silent on it)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        parsed = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
