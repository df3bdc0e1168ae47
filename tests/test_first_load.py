"""A backfill into tables that hold nothing appends its rows; anything else merges (first_load.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.accelerate.schema import LINE_TOMBSTONE
from pipelines.duckdb_memory import UNCAPPED
from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import duckdb_destination, make_pipeline, run_job

from conftest import Harness

TABLES = {"invoice", "invoice_line"}


def merged_tables(harness: Harness) -> set[str]:
    """The tables the last load merged (a `sql` job is dlt's merge), of those it loaded rows into."""
    info = harness.pipeline.last_trace.last_load_info
    jobs = [job.job_file_info for package in info.load_packages for job in package.jobs["completed_jobs"]]
    loaded = {job.table_name for job in jobs if job.file_format == "parquet"}
    assert loaded >= TABLES, "the load must have loaded both tables"
    return {job.table_name for job in jobs if job.file_format == "sql"} & TABLES


def staged_tables(harness: Harness) -> set[str]:
    return {
        name
        for (name,) in harness.query(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'billing_staging'"
        )
    }


def test_a_backfill_into_an_empty_destination_appends_and_the_next_run_merges(
    harness: Harness, world: World
) -> None:
    harness.run()
    assert merged_tables(harness) == set()
    assert not staged_tables(harness) & TABLES, "nothing went through dlt's staging dataset"
    harness.assert_equals_world(world)

    world.advance_day()
    harness.run()
    assert merged_tables(harness) == TABLES
    harness.assert_equals_world(world)
    # the hints only a merge reads are back for every later run
    tables = harness.pipeline.default_schema.tables
    assert tables["invoice"]["write_disposition"] == "merge"
    assert tables["invoice"]["columns"]["last_update_date"]["dedup_sort"] == "desc"
    assert tables["invoice_line"]["columns"][LINE_TOMBSTONE]["hard_delete"] is True


def test_a_new_pipeline_into_a_dataset_that_holds_invoices_merges_with_them(
    tmp_path: Path, emulator: EmulatorServer, world: World
) -> None:
    first = Harness(tmp_path, emulator, name="shared")
    first.run()
    world.advance_day()
    # another pipeline (no state, no schema of its own) loading into the same DuckDB file and dataset
    second = _another_pipeline_on(first, tmp_path / "elsewhere", emulator)
    second.run()
    assert merged_tables(second) == TABLES
    first.assert_equals_world(world)
    assert first.query("SELECT count(*) - count(DISTINCT invoice_id) FROM billing.invoice") == [(0,)]


def test_a_new_pipeline_into_a_dataset_whose_tables_are_empty_appends(
    tmp_path: Path, emulator: EmulatorServer, world: World
) -> None:
    first = Harness(tmp_path, emulator, name="shared")
    first.run()
    with duckdb.connect(str(first.database)) as connection:
        connection.execute("DELETE FROM billing.invoice_line; DELETE FROM billing.invoice")
    second = _another_pipeline_on(first, tmp_path / "elsewhere", emulator)
    second.run()
    assert merged_tables(second) == set()
    first.assert_equals_world(world)


def test_a_full_refresh_appends_into_the_tables_it_dropped_and_stores_no_tombstone(
    harness: Harness, world: World
) -> None:
    harness.run()
    changes = world.advance_day()
    assert changes.lines_all_removed, "the day must leave an invoice with no lines"
    run_job(harness.pipeline, accelerate=harness.source(), only="accelerate", full_refresh=True)
    assert merged_tables(harness) == set()
    harness.assert_equals_world(world)
    assert harness.query(f"SELECT count(*) FROM billing.invoice_line WHERE {LINE_TOMBSTONE}") == [(0,)]
    ids = ", ".join(str(invoice_id) for invoice_id in changes.lines_all_removed)
    assert harness.query(f"SELECT count(*) FROM billing.invoice_line WHERE invoice_id IN ({ids})") == [(0,)]


def test_an_appended_copy_replaces_other_loads_and_keeps_this_loads_other_files(
    harness: Harness, tmp_path: Path
) -> None:
    """The copy job of an appended table (pipelines/duckdb_rerun.py), run by hand as dlt's loader runs it:
    an invoice's lines in two files of one load (a file dlt started anew mid-invoice) keep both files'
    lines, replace the lines an earlier load stored, and a file run twice leaves one copy."""
    harness.run()
    table = dict(harness.pipeline.default_schema.tables["invoice_line"])
    assert table["write_disposition"] == "append"
    [(invoice_id, stored_lines)] = harness.query(
        "SELECT invoice_id, count(*) FROM billing.invoice_line GROUP BY 1 HAVING count(*) >= 2 LIMIT 1"
    )
    load_id = "1999999999.5"

    def lines_file(name: str, positions: list[int]) -> str:
        path = tmp_path / f"invoice_line.{name}.0.parquet"
        rows = len(positions)
        pq.write_table(
            pa.table(
                {
                    "invoice_id": pa.array([invoice_id] * rows, pa.int64()),
                    "line_position": pa.array(positions, pa.int64()),
                    LINE_TOMBSTONE: pa.array([None] * rows, pa.bool_()),
                    "_dlt_load_id": pa.array([load_id] * rows, pa.string()),
                }
            ),
            path,
        )
        return str(path)

    first, second = lines_file("firstfile", [1, 2]), lines_file("secondfile", [7])
    with harness.pipeline.destination_client() as client:
        for path, restore in [(first, False), (second, False), (second, True)]:
            job = client.create_load_job(table, path, load_id, restore)
            job.set_run_vars(load_id=load_id, schema=harness.pipeline.default_schema, load_table=table)
            job.run_managed(client, threading.BoundedSemaphore(1))
            assert job.state() == "completed", job.exception()
    sql = f"SELECT line_position, _dlt_load_id FROM billing.invoice_line WHERE invoice_id = {invoice_id}"
    with harness.pipeline.sql_client() as sql_client, sql_client.execute_query(sql + " ORDER BY 1") as cursor:
        assert cursor.fetchall() == [(1, load_id), (2, load_id), (7, load_id)]
    assert stored_lines >= 2


def _another_pipeline_on(first: Harness, folder: Path, emulator: EmulatorServer) -> Harness:
    """A pipeline of another name and working folder, on `first`'s DuckDB file and dataset."""
    folder.mkdir()
    other = Harness(folder, emulator, name="other")
    other.database = first.database
    other.pipeline = make_pipeline(
        "other", destination=duckdb_destination(str(first.database)), pipelines_dir=str(folder / "dlt")
    )
    return other


def test_a_backfill_loads_under_the_memory_cap_and_a_later_merge_without_it(
    harness: Harness, world: World
) -> None:
    """The cap keeps an appending backfill's memory flat; a merge under it ran out of memory at 1,000,000
    invoices (duckdb_memory.py). Each run's extract sets the cap for its load: DuckDB is asked, as dlt
    asks it for the load, what limit it applies."""
    limits = []
    for day in range(2):
        if day:
            world.advance_day()
        harness.pipeline.extract(harness.source())
        with harness.pipeline.sql_client() as client:
            limits.append(str(client.execute_sql("SELECT current_setting('memory_limit')")[0][0]))
        harness.pipeline.normalize()
        harness.pipeline.load()
    assert merged_tables(harness) == TABLES, "the second load merged"
    harness.assert_equals_world(world)
    backfill, merge = limits
    assert _is_the_cap(backfill) and not _is_the_cap(merge)


def test_loads_after_the_accelerate_backfill_run_without_the_cap(harness: Harness) -> None:
    """Qvalia's merges (and create-from-order's) come after Accelerate's load in the same run."""
    harness.run()
    credentials = harness.pipeline.destination.config_params["credentials"]
    assert credentials.global_config["memory_limit"] == UNCAPPED
    with harness.pipeline.sql_client() as client:
        assert not _is_the_cap(str(client.execute_sql("SELECT current_setting('memory_limit')")[0][0]))


def _is_the_cap(limit: str) -> bool:
    number, unit = limit.split()
    return unit == "MiB" and float(number) < 64  # DuckDB prints 64MB as 61.0 MiB
