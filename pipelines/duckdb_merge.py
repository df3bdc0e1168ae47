"""dlt's DuckDB destination, whose merge deletes the replaced rows by the merge key alone where that selects
the same rows as dlt's own condition, instead of a join that first groups every stored row.

Why: `invoice_line` merges on `invoice_id` (its merge key: an updated invoice's old lines all go) and has
the primary key (`invoice_id`, `line_position`). dlt deletes the stored rows that match a staged row by
`primary key OR merge key` (dlt-hub/dlt#2752 reports the same condition slow on Snowflake). PostgreSQL
reduces that to the merge key and hash-joins; DuckDB (2.0.1) does not, and groups every stored line by both
columns before joining: the delete took 32 ms at 550,000 stored lines and 520 ms at 5.5 million, where the
merge key alone took 2.5 and 9 ms (the same 2,155 rows deleted). That cost grew with the table, not with
what changed, on every run that loaded rows.

Same rows: a merge key made of primary key columns matches whenever the primary key does (`=` is NULL,
never true, for a NULL on either side, in both), so `primary key OR merge key` is the merge key alone.
Other keys, other strategies (`upsert`, `scd2`) and every other statement are dlt's, unchanged.

The factory keeps dlt's DuckDB type and name, so configuration sections, the pipeline's state and every
check of "is this DuckDB" see dlt's `duckdb`; only the job client that writes the merge is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlt.common.destination.capabilities import DestinationCapabilitiesContext
from dlt.common.destination.reference import DestinationReference
from dlt.common.normalizers.naming import NamingConvention
from dlt.destinations.impl.duckdb.configuration import DuckDbClientConfiguration
from dlt.destinations.impl.duckdb.duck import DuckDbClient
from dlt.destinations.impl.duckdb.factory import duckdb
from dlt.destinations.sql_jobs import SqlMergeFollowupJob

from pipelines.duckdb_rerun import rerun_safe

_DLT_DUCKDB_TYPE = DestinationReference.normalize_type("dlt.destinations.duckdb")


class MergeKeyMergeJob(SqlMergeFollowupJob):
    """dlt's merge job, but the delete of a table whose merge key lies within its primary key joins on the
    merge key alone."""

    @classmethod
    def _gen_key_table_clauses(cls, primary_keys: Sequence[str], merge_keys: Sequence[str]) -> list[str]:
        if merge_keys and set(merge_keys) <= set(primary_keys):
            primary_keys = []  # implied by the merge key: see the module's docstring
        return super()._gen_key_table_clauses(primary_keys, merge_keys)


class InvoiceDuckDbClient(DuckDbClient):
    def _create_merge_followup_jobs(self, table_chain: Sequence[Any]) -> list[Any]:
        return [MergeKeyMergeJob.from_table_chain(table_chain, self.sql_client)]

    def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False) -> Any:
        """dlt's job, made safe to run twice where dlt's merge would not collapse the repeat
        (duckdb_rerun.py)."""
        job = super().create_load_job(table, file_path, load_id, restore)
        return rerun_safe(job, table, file_path, load_id, restore)


class InvoiceDuckDb(duckdb):
    """`dlt.destinations.duckdb` with the merge above, copy jobs that stay exact when run twice
    (duckdb_rerun.py), and capabilities that skip a configuration nothing reads."""

    # its parquet copy jobs stay exact when dlt runs them twice: the Accelerate tables may skip the merge's
    # de-duplication and a backfill may append (accelerate/repeated_ids.py, accelerate/first_load.py)
    copies_rerun_exactly = True

    @property
    def destination_type(self) -> str:
        return _DLT_DUCKDB_TYPE

    @property
    def client_class(self) -> type[DuckDbClient]:
        return InvoiceDuckDbClient

    def capabilities(
        self, config: DuckDbClientConfiguration | None = None, naming: NamingConvention | None = None
    ) -> DestinationCapabilitiesContext:
        """dlt's capabilities. Asked without a configuration, dlt resolves one from every config provider
        (~3 ms) only to hand it to `adjust_capabilities`, whose DuckDB version (dlt's default) does not
        read it; a run asks 15 to 30 times. An unresolved one is handed instead: the same capabilities
        (tests/test_duckdb_merge.py checks both, and that DuckDB's `adjust_capabilities` is still dlt's)."""
        if config is None:
            config = self.spec()
            config.update(self.config_params)  # as dlt starts its own, which it would then resolve
        return super().capabilities(config, naming)
