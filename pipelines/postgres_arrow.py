"""dlt's PostgreSQL destination, loading the arrow tables the sources yield as parquet through the ADBC
driver's binary COPY when that driver is installed (the `postgres` extra brings it), in flat memory.

Why: without the driver dlt's normaliser turns every arrow table into CSV first, 9.6 of a 17.6 s
backfill of 100,000 invoices (bench/backfill.py). dlt can copy parquet through ADBC instead but only
prefers it when told, and its copy job hands the driver a generator of batches, which the driver's
Python layer gathers into one table (`pyarrow.Table.from_batches`): the whole file in memory, peak RSS
635 MB at 300,000 invoices. Copied one row group at a time (dlt's own `_ingest_per_rowgroup`, in the
job's one transaction), memory stays flat.

Every table goes that way once the driver is found, Qvalia's and dlt's own `_dlt_pipeline_state` too (dlt
writes their rows into parquet; before, SQL inserts), each job on an ADBC connection of its own. Without
the driver, or with dlt's `disable_adbc_detection` set, everything is dlt's: CSV for the arrow tables and
SQL inserts for the rest, as before.
The factory keeps dlt's PostgreSQL type and name, so configuration sections (`destination.postgres`),
the pipeline's state and every check of "is this PostgreSQL" see dlt's `postgres`.
"""

from __future__ import annotations

from typing import Any

from dlt.common.destination.capabilities import DestinationCapabilitiesContext
from dlt.common.destination.reference import DestinationReference
from dlt.destinations._adbc_jobs import make_adbc_parquet_file_format_selector
from dlt.destinations.impl.postgres.factory import get_adbc_driver_location, postgres
from dlt.destinations.impl.postgres.postgres import PostgresClient, PostgresParquetCopyJob

_DLT_POSTGRES_TYPE = DestinationReference.normalize_type("dlt.destinations.postgres")
_DOCS = (
    "https://dlthub.com/docs/dlt-ecosystem/destinations/postgres#fast-loading-with-arrow-tables-and-parquet"
)


class RowGroupParquetCopyJob(PostgresParquetCopyJob):
    """dlt's ADBC copy of a parquet file, handed to the driver one row group at a time."""

    _ingest_per_rowgroup = True


class InvoicePostgresClient(PostgresClient):
    def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False) -> Any:
        job = super().create_load_job(table, file_path, load_id, restore)
        if type(job) is PostgresParquetCopyJob:
            return RowGroupParquetCopyJob(file_path)
        return job


class InvoicePostgres(postgres):
    """`dlt.destinations.postgres` that prefers parquet where the ADBC driver is found (dlt's own check, per
    table, at normalize), and copies it in flat memory."""

    @property
    def destination_type(self) -> str:
        return _DLT_POSTGRES_TYPE

    @property
    def client_class(self) -> type[PostgresClient]:
        return InvoicePostgresClient

    def _raw_capabilities(self) -> DestinationCapabilitiesContext:
        caps = super()._raw_capabilities()
        caps.loader_file_format_selector = make_adbc_parquet_file_format_selector(
            get_adbc_driver_location(), _DOCS, prefer_parquet=True
        )
        return caps
