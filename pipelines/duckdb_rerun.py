"""DuckDB copy jobs for the Accelerate tables that stay exact when dlt runs them twice, or after another
writer.

dlt records a load job as done after the job has committed, by moving its file. A run killed between the
two finds the job still started, and the next run executes it again (`restore=True`): its rows go in a
second time. For most tables dlt's merge then de-duplicates the staging rows by primary key, but the
Accelerate tables skip that (their staged rows are declared unique: repeated_ids.py), and a backfill into
empty tables appends without a merge (accelerate/first_load.py). Both kept the rows twice: measured, a
kill after the line copy committed left 19 duplicate lines after the rerun, and after a backfill's invoice
append 290 invoice rows for 150 invoices.

- A staging copy that dlt runs again first deletes the rows of this load (`_dlt_load_id`) whose primary
  key is in its file, in the same transaction as the insert: exactly what its first run may have
  committed, since the keys of a table declared de-duplicated are unique within the load.
- An appended table's copy deletes every stored row whose key (the merge key, else the primary key) is in
  its file, then inserts the file's rows less the line tombstones, in one transaction: on tables that are
  empty, as the backfill found them, the delete finds nothing; after a first run of the same job, or after
  another pipeline loaded the same dataset while this package waited, it is what the merge would have
  done. Tombstones stay in the file so that an invoice with no lines left takes its stored lines with it.

Every other job is dlt's.
"""

from __future__ import annotations

from typing import Any

from dlt.common.schema.typing import C_DLT_LOAD_ID
from dlt.common.storages.load_package import ParsedLoadJobFileName
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob

from pipelines.accelerate.repeated_ids import STAGE_DATA_DEDUPLICATED
from pipelines.accelerate.schema import LINE_TOMBSTONE


def rerun_safe(job: Any, table: Any, file_path: str, load_id: str, restore: bool) -> Any:
    """`job`, or one of the copy jobs above where dlt's would not be exact when run again."""
    if type(job) is not DuckDbCopyJob or ParsedLoadJobFileName.parse(file_path).file_format != "parquet":
        return job
    columns = table.get("columns", {})
    if table.get(STAGE_DATA_DEDUPLICATED) is not True or C_DLT_LOAD_ID not in columns:
        return job
    primary_key = [name for name, column in columns.items() if column.get("primary_key")]
    merge_key = [name for name, column in columns.items() if column.get("merge_key")]
    if not primary_key:
        return job
    if table.get("write_disposition") == "append":
        tombstone = LINE_TOMBSTONE if LINE_TOMBSTONE in columns else None
        return ReplacingAppendJob(file_path, merge_key or primary_key, tombstone)
    if restore:
        return RerunCopyJob(file_path, primary_key, load_id)
    return job


class _KeyedCopyJob(DuckDbCopyJob):
    """dlt's copy of a parquet file, after a delete of the stored rows whose key is in the file."""

    def __init__(self, file_path: str, keys: list[str]) -> None:
        super().__init__(file_path)
        self._keys = keys

    def _delete_sent_keys(self, also: str = "", *params: Any) -> None:
        sql_client = self._job_client.sql_client
        table = sql_client.make_qualified_table_name(self.load_table_name)
        matches = " AND ".join(
            f"sent.{name} = stored.{name}" for name in map(sql_client.escape_column_name, self._keys)
        )
        sql_client.execute_sql(
            f"DELETE FROM {table} AS stored WHERE {also}EXISTS "
            f"(SELECT 1 FROM read_parquet('{self._quoted_path()}') AS sent WHERE {matches})",
            *params,
        )

    def _quoted_path(self) -> str:
        return self._file_path.replace("'", "''")


class RerunCopyJob(_KeyedCopyJob):
    def __init__(self, file_path: str, keys: list[str], load_id: str) -> None:
        super().__init__(file_path, keys)
        self._load_id = load_id

    def run(self) -> None:
        sql_client = self._job_client.sql_client
        with sql_client.begin_transaction():
            load_id = sql_client.escape_column_name(C_DLT_LOAD_ID)
            self._delete_sent_keys(f"stored.{load_id} = %s AND ", self._load_id)
            super().run()


class ReplacingAppendJob(_KeyedCopyJob):
    def __init__(self, file_path: str, keys: list[str], tombstone: str | None) -> None:
        super().__init__(file_path, keys)
        self._tombstone = tombstone

    def run(self) -> None:
        sql_client = self._job_client.sql_client
        table = sql_client.make_qualified_table_name(self.load_table_name)
        kept = (
            f" WHERE {sql_client.escape_column_name(self._tombstone)} IS NOT TRUE" if self._tombstone else ""
        )
        with sql_client.begin_transaction():
            self._delete_sent_keys()
            sql_client.execute_sql(
                f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet('{self._quoted_path()}', "
                f"union_by_name=true){kept}"
            )
