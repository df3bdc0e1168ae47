"""Qvalia constants in one place, each commented, so code reads `settings.X` and a test can patch one."""

# The two servers of the OpenAPI document; `base_url` replaces them (https unless loopback).
BASE_URLS = {"production": "https://api.qvalia.com", "qa": "https://api-qa.qvalia.com"}
DEFAULT_ENVIRONMENT = "production"
# Get status and Create from Order; both are POST with a JSON body (the seed).
STATUS_PATH = "/account/{account}/action/invoice/outgoing/status/{integration_id}"
CREATE_PATH = "/account/{account}/action/invoice/createandsend/{integration_id}"
# The API key goes in this header as it is (the seed's securityScheme `api_key`, in: header).
API_KEY_HEADER = "Authorization"

# The Accelerate field whose value is Qvalia's {integrationId}, by default (CONTRACT.md).
DEFAULT_INTEGRATION_ID_FIELD = "invoice_id"
# Status calls in flight at once. Eight keeps a 50 ms API busy (~160 calls/s) without looking like a flood.
DEFAULT_MAX_CONCURRENCY = 8
MAX_CONCURRENCY_LIMIT = 64

# The status object's fields, as the seed lists them.
STATUS_FIELDS = (
    "document_id",
    "order_number",
    "payment_reference",
    "credit_note",
    "reminder",
    "status",
    "sent_at",
    "paid_at",
    "cancelled_at",
    "send_method",
)
STATUS_TIMESTAMPS = ("sent_at", "paid_at", "cancelled_at")
# A status that never changes again: such an invoice is not polled unless a full refresh asks for it.
FINAL_STATUSES = frozenset({"paid", "cancelled"})

# Where the status resource keeps the figures of its last run (dlt resource state).
STATE_LAST_RUN = "last_run"
