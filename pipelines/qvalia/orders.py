"""Create from Order, at most once per order, recorded in `invoice_from_order`.

Before any call, an order is checked twice: against `invoice_from_order` (created by this tool before) and
against Qvalia (an outgoing status exists: the invoice is there already). The intent is recorded
('requested') before the call and the result ('created' or 'failed') after it, so a crash between the call
and the record is recognised on the next attempt: Qvalia reports the invoice, the row becomes 'created',
and nothing is sent twice. The table has a source of its own, so a full refresh never drops it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import dlt

from pipelines.errors import ApiRequestError, ApiUnavailableError
from pipelines.qvalia.client import OutcomeUnknownError, QvaliaClient
from pipelines.qvalia.destination import recorded_orders

logger = logging.getLogger(__name__)

ORDER_COLUMNS: dict[str, Any] = {
    "integration_id": {"name": "integration_id", "data_type": "text", "nullable": False},
    "send_method": {"name": "send_method", "data_type": "text", "nullable": True},
    "state": {"name": "state", "data_type": "text", "nullable": True},
    "message": {"name": "message", "data_type": "text", "nullable": True},
    "invoice": {"name": "invoice", "data_type": "text", "nullable": True},
    "requested_at": {"name": "requested_at", "data_type": "timestamp", "timezone": True, "nullable": True},
    "created_at": {"name": "created_at", "data_type": "timestamp", "timezone": True, "nullable": True},
}


@dataclass(frozen=True)
class OrderOutcome:
    integration_id: str
    result: Literal["created", "skipped", "failed"]
    detail: str

    def line(self) -> str:
        return f"{self.integration_id}: {self.result}: {self.detail}"


@dlt.resource(
    name="invoice_from_order", primary_key="integration_id", write_disposition="merge", columns=ORDER_COLUMNS
)
def invoice_from_order(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from records


@dlt.source(name="qvalia_orders", max_table_nesting=0)
def qvalia_orders_source(records: list[dict[str, Any]]) -> Any:
    return invoice_from_order(records)


def create_invoices_from_orders(
    pipeline: dlt.Pipeline, client: QvaliaClient, integration_ids: Iterable[str], send_method: str
) -> list[OrderOutcome]:
    """Each order at most once ever; one failure does not stop the others."""
    if not send_method or not send_method.strip():
        raise ApiRequestError("--send-method must name a Qvalia send method, for example peppol or email")
    ids = list(dict.fromkeys(str(i).strip() for i in integration_ids if str(i).strip()))
    recorded = recorded_orders(pipeline)
    outcomes: dict[str, OrderOutcome] = {}
    to_create: list[str] = []
    recovered: list[dict[str, Any]] = []
    for integration_id in ids:
        if recorded.get(integration_id) == "created":
            outcomes[integration_id] = OrderOutcome(
                integration_id, "skipped", "already invoiced (see invoice_from_order)"
            )
            continue
        try:
            status = client.get_status(integration_id)
        except ApiUnavailableError as error:
            outcomes[integration_id] = OrderOutcome(integration_id, "failed", str(error))
            continue
        if status is None:
            to_create.append(integration_id)
        elif recorded.get(integration_id) == "requested":
            recovered.append(_record(integration_id, None, "created", "confirmed after an interrupted run"))
            outcomes[integration_id] = OrderOutcome(
                integration_id, "skipped", "created by an earlier run that was interrupted; now recorded"
            )
        else:
            outcomes[integration_id] = OrderOutcome(
                integration_id,
                "skipped",
                f"Qvalia already has an outgoing invoice (status {status.get('status')})",
            )
    if recovered:
        _load(pipeline, recovered)
    requested_at = dt.datetime.now(dt.UTC)
    if to_create:
        _load(
            pipeline,
            [_record(i, send_method, "requested", None, requested_at=requested_at) for i in to_create],
        )
    results: list[dict[str, Any]] = []
    for integration_id in to_create:
        try:
            created = client.create_invoice_from_order(integration_id, send_method)
        except OutcomeUnknownError as error:
            outcomes[integration_id] = OrderOutcome(
                integration_id, "failed", f"{error}; run the command again: it checks Qvalia first"
            )
            continue
        except (ApiRequestError, ApiUnavailableError) as error:
            results.append(
                _record(integration_id, send_method, "failed", str(error), requested_at=requested_at)
            )
            outcomes[integration_id] = OrderOutcome(integration_id, "failed", str(error))
            continue
        record = _record(
            integration_id,
            send_method,
            "created",
            created.message,
            created.invoice,
            requested_at=requested_at,
        )
        results.append(record)
        outcomes[integration_id] = OrderOutcome(
            integration_id, "created", created.message or "created and sent"
        )
    if results:
        _load(pipeline, results)
    return [outcomes[i] for i in ids]


def _record(
    integration_id: str,
    send_method: str | None,
    state: str,
    message: str | None,
    invoice: Any = None,
    requested_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """A whole row (merge replaces rows whole), so the request time travels with the later states."""
    now = dt.datetime.now(dt.UTC)
    row: dict[str, Any] = {"integration_id": integration_id, "state": state, "message": message}
    row["send_method"] = send_method
    row["requested_at"] = requested_at
    if state == "created":
        row["created_at"] = now
        if invoice is not None:
            row["invoice"] = invoice if isinstance(invoice, str) else _json(invoice)
    return row


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _load(pipeline: dlt.Pipeline, rows: list[dict[str, Any]]) -> None:
    from pipelines.invoices import run_source

    run_source(pipeline, qvalia_orders_source(rows))
    logger.info("invoice_from_order: %s rows recorded", len(rows))
