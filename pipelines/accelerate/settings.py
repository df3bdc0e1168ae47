"""Accelerate constants in one place, each commented, so code reads `settings.X` and a test can patch one."""

from datetime import date

# The production URL, built from the account's subdomain; `base_url` replaces all of it.
BASE_URL_TEMPLATE = "https://{subdomain}.quotevineapp.com/qvine/quotevine/api/v2"
# The only endpoint we call: invoices whose last update is on or after {date} (a day, not a time).
INVOICES_SINCE_PATH = "/invoices/since/{date}/"
# The header that carries the key (the seed's "HTTP Header" section).
API_KEY_HEADER = "api-key"

# Contract defaults (../shared/CONTRACT.md), repeated in .dlt/config.toml for users to see.
DEFAULT_START_DATE = date(2000, 1, 1)
DEFAULT_LOOKBACK_DAYS = 1
DEFAULT_TIMEZONE = "Europe/London"

# Invoices read by arrow's JSON reader at a time, and invoices per item handed to dlt (read batches are
# joined without copying). Arrow's memory is a few times the batch's bytes, so reading is done small; dlt
# validates a table's hints once per item it is given (about 25 ms for our two tables; no cache for arrow
# items), so items are large. A batch that must go the dict way is converted DICT_BATCH_SIZE at a time,
# as dicts take ~12 KB an invoice. Measured in bench/backfill.py: see bench/README.md.
BATCH_SIZE = 2_500
ROWS_PER_ITEM = 10_000
DICT_BATCH_SIZE = 2_000
# A body up to this size is read into memory and split by msgspec (raw_items.py: what an incremental run's
# window of a few days takes); a larger one (a backfill) is split by the byte scan a chunk at a time, in
# flat memory. 64 MiB is the window of a run after days that changed ~10% of 100,000 invoices.
IN_MEMORY_BODY_BYTES = 64 << 20
# A long read logs its progress at most this often (the first batch and the total are always logged).
PROGRESS_SECONDS = 5.0
# The response body is spooled to a temporary file in chunks of this size, then parsed as a stream.
DOWNLOAD_CHUNK_BYTES = 1 << 20

# Where the resource keeps its state (dlt resource state, committed with the load that carried it).
STATE_CURSOR = "last_update_date"
STATE_FIELD_TYPES = "field_types"
# Where the resource kept the day the last run asked from and what it read, before these went to the job's
# summary directly (removed from the state at the next run; see `_LAST_READ` in __init__.py).
STATE_KEPT_BEFORE = ("last_since_date", "last_run")
