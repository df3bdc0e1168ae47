"""dlt's filesystem destination: the job writes Delta tables (parquet files and a log) to a folder, and
after several business days of merges and removed lines they hold what DuckDB holds: the same rows, the
same types, no invoice version twice and no removed line left behind."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from pipelines.emulator import EmulatorServer, World
from pipelines.invoices import make_pipeline, run_job

from conftest import Harness, assert_rows_equal_world, assert_same_statuses, query_rows


def lake_pipeline(folder: Path) -> tuple[Path, dlt.Pipeline]:
    """A pipeline into dlt's filesystem destination on a local folder, and that folder."""
    lake = folder / "lake"
    pipeline = make_pipeline(
        "invoices_fs",
        destination=dlt.destinations.filesystem(lake.as_uri()),
        pipelines_dir=str(folder / "fs"),
    )
    return lake, pipeline


def delta_rows(folder: Path, table: str) -> list[dict[str, Any]]:
    """The table read back by DuckDB from the Delta table's current parquet files (the ones its log lists
    as live), the way any parquet reader sees a Delta table without deletion vectors."""
    delta = DeltaTable(str(folder / "billing" / table))
    files = delta.file_uris()
    assert files, f"{table} has no data files"
    with duckdb.connect() as connection:
        return query_rows(connection, f"SELECT * FROM read_parquet({files!r}, union_by_name = true)")


def delta_types(folder: Path, table: str) -> dict[str, pa.DataType]:
    schema = DeltaTable(str(folder / "billing" / table)).to_pyarrow_dataset().schema
    return {field.name: field.type for field in schema}


def test_delta_tables_hold_the_same_data_as_duckdb_after_business_days(
    harness: Harness, world: World, tmp_path: Path
) -> None:
    lake, filesystem = lake_pipeline(tmp_path)
    removed_lines = 0
    for day in range(4):
        if day:
            changes = world.advance_day()
            removed_lines += len(changes.removed_line_ids)
        for pipeline in (harness.pipeline, filesystem):
            run_job(pipeline, accelerate=harness.source(), qvalia=harness.qvalia())
        assert_rows_equal_world(delta_rows(lake, "invoice"), delta_rows(lake, "invoice_line"), world)
        harness.assert_equals_world(world)
    assert removed_lines > 0, "the business days removed no line: the test would prove nothing"
    assert_same_statuses(delta_rows(lake, "invoice_status"), harness.rows("invoice_status"))
    history = delta_rows(lake, "invoice_status_history")
    assert len({(row["integration_id"], row["fingerprint"]) for row in history}) == len(history)
    assert len(history) == len(harness.rows("invoice_status_history"))

    invoice_types = delta_types(lake, "invoice")
    assert invoice_types["paid_amount"] == invoice_types["net_amount"] == pa.decimal128(38, 9)
    assert invoice_types["last_update_date"] == pa.timestamp("us", tz="UTC")
    assert invoice_types["tax_date"] == pa.date32() and invoice_types["invoice_id"] == pa.int64()
    paid = next(row for row in delta_rows(lake, "invoice") if row.get("paid_amount") is not None)
    assert isinstance(paid["paid_amount"], decimal.Decimal)
    assert paid["last_update_date"].tzinfo is not None
    assert paid["last_update_date"].utcoffset() == dt.timedelta(0)


def test_full_refresh_on_delta_tables_reloads_the_world(
    harness: Harness, world: World, tmp_path: Path
) -> None:
    lake, pipeline = lake_pipeline(tmp_path)
    run_job(pipeline, accelerate=harness.source(), only="accelerate")
    world.advance_day()
    run_job(pipeline, accelerate=harness.source(), only="accelerate", full_refresh=True)
    assert_rows_equal_world(delta_rows(lake, "invoice"), delta_rows(lake, "invoice_line"), world)


def test_cli_run_into_filesystem_configured_the_dlt_way(emulator: EmulatorServer, tmp_path: Path) -> None:
    """`--destination filesystem` with the bucket in dlt's environment variable, twice (second run merges)."""
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt"),
        DESTINATION__FILESYSTEM__BUCKET_URL=lake.as_uri(),
        SOURCES__ACCELERATE__BASE_URL=emulator.accelerate_base_url,
        SOURCES__ACCELERATE__API_KEY=emulator.accelerate_api_key,
        SOURCES__QVALIA__BASE_URL=emulator.qvalia_base_url,
        SOURCES__QVALIA__API_KEY=emulator.qvalia_api_key,
        SOURCES__QVALIA__ACCOUNT_REG_NO=emulator.account_reg_no,
    )
    for day in range(2):
        if day:
            emulator.world.advance_day()
        result = subprocess.run(
            [sys.executable, "-m", "pipelines", "run", "--destination", "filesystem"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "-> filesystem dataset billing" in result.stdout
        assert emulator.accelerate_api_key not in result.stdout + result.stderr
    assert_rows_equal_world(delta_rows(lake, "invoice"), delta_rows(lake, "invoice_line"), emulator.world)
    assert delta_rows(lake, "invoice_status")
