"""Shared fixtures: the emulator on a free loopback port, a pipeline in a temp folder, and the world's
invoices converted to what the tables must hold, computed independently of the connector's own code."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from pipelines.accelerate import accelerate_source
from pipelines.emulator import EmulatorServer, Faults, World
from pipelines.invoices import RunSummary, duckdb_destination, make_pipeline, run_job
from pipelines.qvalia import qvalia_source

LONDON = ZoneInfo("Europe/London")
TIMESTAMP_FIELDS = {"creation_date", "last_update_date"}
DATE_FIELDS = {"tax_date", "due_date", "sent_date", "paid_date", "void_date", "invoice_date"}
DLT_COLUMNS = {"_dlt_load_id", "_dlt_id", "_lines_removed", "_fingerprint"}


@pytest.fixture
def world() -> World:
    return World(seed=11, invoices=150)


@pytest.fixture
def emulator(world: World) -> Iterator[EmulatorServer]:
    with EmulatorServer(world, faults=Faults()) as server:
        yield server


class Harness:
    """One pipeline in a temp folder, run against one emulator, with helpers to read its tables."""

    def __init__(self, folder: Path, server: EmulatorServer, name: str = "invoices_test") -> None:
        self.folder = folder
        self.server = server
        self.database = folder / f"{name}.duckdb"
        self.pipelines_dir = folder / "dlt_pipelines"
        self.pipeline = make_pipeline(
            name,
            destination=duckdb_destination(str(self.database)),
            pipelines_dir=str(self.pipelines_dir),
        )

    def source(self, **settings: Any) -> Any:
        settings.setdefault("api_key", self.server.accelerate_api_key)
        settings.setdefault("base_url", self.server.accelerate_base_url)
        return accelerate_source(**settings)

    def run(self, **settings: Any) -> RunSummary:
        return run_job(self.pipeline, accelerate=self.source(**settings), only="accelerate")

    def qvalia(self, **settings: Any) -> Any:
        settings.setdefault("api_key", self.server.qvalia_api_key)
        settings.setdefault("account_reg_no", self.server.account_reg_no)
        settings.setdefault("base_url", self.server.qvalia_base_url)
        return qvalia_source(**settings)

    def run_both(self, **qvalia_settings: Any) -> RunSummary:
        return run_job(self.pipeline, accelerate=self.source(), qvalia=self.qvalia(**qvalia_settings))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.database, sql)

    def rows(self, table: str) -> list[dict[str, Any]]:
        return table_rows(self.database, table)

    def invoices(self) -> dict[int, dict[str, Any]]:
        return {row["invoice_id"]: row for row in self.rows("invoice")}

    def lines(self) -> dict[tuple[int, int], dict[str, Any]]:
        return {(row["invoice_id"], row["line_position"]): row for row in self.rows("invoice_line")}

    def assert_equals_world(self, world: World) -> None:
        assert_database_equals_world(self.database, world)


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        return connection.sql(sql).fetchall()


def table_rows(database: Path, table: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return query_rows(connection, f"SELECT * FROM billing.{table}")


def query_rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """The query's rows as dicts in UTC, without dlt's own columns."""
    connection.execute("SET TimeZone = 'UTC'")
    relation = connection.sql(sql)
    names = relation.columns
    return [
        {k: v for k, v in zip(names, row, strict=True) if k not in DLT_COLUMNS} for row in relation.fetchall()
    ]


def assert_database_equals_world(database: Path, world: World) -> None:
    """Every invoice and line of the world, exactly once, with exactly its values; nothing else."""
    assert_rows_equal_world(table_rows(database, "invoice"), table_rows(database, "invoice_line"), world)


def assert_rows_equal_world(
    invoice_rows: list[dict[str, Any]], line_rows: list[dict[str, Any]], world: World
) -> None:
    """The same check for rows read from any destination (DuckDB, PostgreSQL, parquet files...)."""
    expected_invoices, expected_lines = expected_tables(world)
    actual_invoices = {row["invoice_id"]: row for row in invoice_rows}
    assert len(actual_invoices) == len(invoice_rows), "duplicate invoice rows"
    assert sorted(actual_invoices) == sorted(expected_invoices)
    for invoice_id, expected in expected_invoices.items():
        assert _without_nulls(actual_invoices[invoice_id]) == _without_nulls(expected), invoice_id
    actual_lines = {(row["invoice_id"], row["line_position"]): row for row in line_rows}
    assert len(actual_lines) == len(line_rows), "duplicate line rows"
    assert sorted(actual_lines) == sorted(expected_lines)
    for key, expected in expected_lines.items():
        assert _without_nulls(actual_lines[key]) == _without_nulls(expected), key


@pytest.fixture
def harness(tmp_path: Path, emulator: EmulatorServer) -> Harness:
    return Harness(tmp_path, emulator)


def environment_without_dlt_settings() -> dict[str, str]:
    """The suite's environment for a subprocess, less the dlt settings a shell may hold (a source,
    destination or runtime set there would redirect the command under test)."""
    settings = ("SOURCES__", "DESTINATION__", "RUNTIME__")
    return {name: value for name, value in os.environ.items() if not name.startswith(settings)}


def expected_tables(
    world: World,
) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, int], dict[str, Any]]]:
    """What the destination must hold for the world's current invoices."""
    invoices: dict[int, dict[str, Any]] = {}
    lines: dict[tuple[int, int], dict[str, Any]] = {}
    for invoice in world.invoices.values():
        row = {
            name: expected_value(name, value) for name, value in invoice.items() if name != "invoice_lines"
        }
        invoices[invoice["invoice_id"]] = row
        for position, line in enumerate(invoice.get("invoice_lines") or [], start=1):
            key = (invoice["invoice_id"], position)
            lines[key] = {
                "invoice_id": invoice["invoice_id"],
                "line_position": position,
                **{name: expected_value(name, value) for name, value in line.items()},
            }
    return invoices, lines


def expected_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in TIMESTAMP_FIELDS:
        naive = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return naive.replace(tzinfo=LONDON).astimezone(dt.UTC)
    if name in DATE_FIELDS:
        return dt.date.fromisoformat(value)
    if isinstance(value, float):
        raise AssertionError(f"the emulator served a float for {name}")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, decimal.Decimal):
        return value
    return value


def _without_nulls(row: dict[str, Any]) -> dict[str, Any]:
    """Columns the API has never sent a value for do not exist yet; a null is the same as absent."""
    return {k: v for k, v in row.items() if v is not None}


def assert_same_statuses(other_rows: list[dict[str, Any]], duckdb_rows: list[dict[str, Any]]) -> None:
    """Two destinations polled moments apart hold the same statuses: `checked_at` differs, nothing else."""
    other = {row["integration_id"]: row for row in other_rows}
    stored = {row["integration_id"]: row for row in duckdb_rows}
    assert other and sorted(other) == sorted(stored)
    for key, row in other.items():
        mine = {k: v for k, v in row.items() if k != "checked_at"}
        theirs = {k: v for k, v in stored[key].items() if k != "checked_at"}
        assert mine == theirs, key
