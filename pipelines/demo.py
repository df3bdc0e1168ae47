"""`invoice-pipelines demo` and `invoice-pipelines emulator`: the real job against the bundled emulator.

The demo needs no credentials and no network: it starts the emulator on loopback, loads into
`invoices_demo.duckdb` (pipeline `invoices_demo`), advances the emulator's business days and loads again,
so incremental loading can be watched at work. It is the only place, with the tests, that joins the
emulator and the sources.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import dlt
import duckdb

from pipelines.accelerate import accelerate_source
from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import DEFAULT_DATASET, duckdb_destination, make_pipeline, run_job
from pipelines.qvalia import qvalia_source

DEMO_PIPELINE = "invoices_demo"
DEMO_DATABASE = "invoices_demo.duckdb"
DEMO_SEED = 7

OUTSTANDING_BY_PAYER = f"""
WITH gross AS (
  SELECT invoice_id, sum(gross_amount) AS gross_amount FROM {DEFAULT_DATASET}.invoice_line GROUP BY ALL
)
SELECT payer_display_name AS payer,
       count(*) AS open_invoices,
       sum(gross.gross_amount - i.paid_amount)::DECIMAL(18, 2) AS outstanding,
       max(DATE '{{today}}' - i.due_date) AS most_days_overdue
FROM {DEFAULT_DATASET}.invoice AS i JOIN gross USING (invoice_id)
WHERE i.invoice_type = 'Sales' AND i.paid_date IS NULL AND i.void_date IS NULL
GROUP BY ALL ORDER BY outstanding DESC LIMIT 5
"""

INVOICES_BY_STATE = f"""
SELECT invoice_type,
       count(*) FILTER (WHERE paid_date IS NULL AND void_date IS NULL) AS open,
       count(*) FILTER (WHERE paid_date IS NOT NULL) AS paid,
       count(*) FILTER (WHERE void_date IS NOT NULL) AS void,
       (SELECT count(*) FROM {DEFAULT_DATASET}.invoice_line AS l
         JOIN {DEFAULT_DATASET}.invoice AS j USING (invoice_id) WHERE j.invoice_type = i.invoice_type) AS lines
FROM {DEFAULT_DATASET}.invoice AS i GROUP BY ALL ORDER BY ALL
"""


STATUS_BY_METHOD = f"""
SELECT send_method, status, count(*) AS invoices
FROM {DEFAULT_DATASET}.invoice_status GROUP BY ALL ORDER BY send_method, invoices DESC
"""

STATUS_HISTORY = f"""
WITH moved AS (
  SELECT integration_id FROM {DEFAULT_DATASET}.invoice_status_history
  GROUP BY ALL HAVING count(*) > 1 ORDER BY integration_id LIMIT 3
)
SELECT h.integration_id, h.status, strftime(h.first_seen_at, '%Y-%m-%d %H:%M') AS first_seen_utc,
       strftime(h.sent_at, '%Y-%m-%d') AS sent, strftime(h.paid_at, '%Y-%m-%d') AS paid
FROM {DEFAULT_DATASET}.invoice_status_history AS h JOIN moved USING (integration_id)
ORDER BY h.integration_id, h.first_seen_at
"""


def run_demo(days: int = 2, invoices: int = 800, out: Callable[[str], None] = print) -> Path:
    """Load, advance `days` business days one at a time, load after each, then show two queries."""
    started = time.monotonic()
    database = Path(DEMO_DATABASE).resolve()
    world = World(seed=DEMO_SEED, invoices=invoices)
    with EmulatorServer(world) as server:
        out(
            f"emulator on {server.accelerate_base_url} with {len(world.invoices):,} invoices; loading into {database}"
        )
        pipeline = _fresh_pipeline(database)
        for day in range(days + 1):
            if day:
                changes = server.advance_day()
                out(f"\nbusiness day {world.today}: {changes.describe()}")
            else:
                out(f"\nfirst run (world day {world.today}): a full load")
            accelerate = accelerate_source(
                api_key=server.accelerate_api_key, base_url=server.accelerate_base_url
            )
            qvalia = qvalia_source(
                api_key=server.qvalia_api_key,
                account_reg_no=server.account_reg_no,
                base_url=server.qvalia_base_url,
            )
            for line in run_job(pipeline, accelerate=accelerate, qvalia=qvalia).lines():
                out(line)
    with duckdb.connect(str(database), read_only=True) as connection:
        out("\ninvoices by state:")
        out(str(connection.sql(INVOICES_BY_STATE)))
        out(f"top payers by outstanding sales invoices on {world.today}:")
        out(str(connection.sql(OUTSTANDING_BY_PAYER.format(today=world.today.isoformat()))))
        out("e-invoice statuses (Qvalia) by send method:")
        out(str(connection.sql(STATUS_BY_METHOD)))
        out("status history of a few invoices whose e-invoice status changed:")
        out(str(connection.sql(STATUS_HISTORY)))
    out(f"demo finished in {time.monotonic() - started:.1f} s; open it with: duckdb {DEMO_DATABASE}")
    return database


def _print_now(line: str) -> None:
    print(line, flush=True)


def serve_emulator(port: int, invoices: int, seed: int, out: Callable[[str], None] = _print_now) -> None:
    """Serve until interrupted, printing what a deployment needs to point at it."""
    world = World(seed=seed, invoices=invoices)
    with EmulatorServer(world, port=port) as server:
        out(f"Accelerate base_url: {server.accelerate_base_url}")
        out(f"Accelerate api_key:  {server.accelerate_api_key}")
        out(f"Qvalia base_url:     {server.qvalia_base_url}")
        out(f"Qvalia api_key:      {server.qvalia_api_key}")
        out(f"Qvalia account_reg_no: {server.account_reg_no}")
        out("for example:")
        out(f"  SOURCES__ACCELERATE__BASE_URL={server.accelerate_base_url} \\")
        out(f"  SOURCES__ACCELERATE__API_KEY={server.accelerate_api_key} invoice-pipelines run")
        out("Ctrl-C to stop.")
        while True:
            time.sleep(3600)


def _fresh_pipeline(database: Path) -> dlt.Pipeline:
    """The demo world is generated anew each time, so the demo starts from empty tables and state."""
    for path in (database, Path(f"{database}.wal")):
        if path.exists():
            os.remove(path)
    pipeline = make_pipeline(DEMO_PIPELINE, destination=duckdb_destination(str(database)))
    return pipeline.drop()
