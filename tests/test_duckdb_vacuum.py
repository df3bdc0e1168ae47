"""The job's DuckDB connection compacts a table only once its deleted rows are half of it: below that the
checkpoint keeps them (where DuckDB's own rule would rewrite row groups at every run), at or above it the
run's checkpoint compacts; small tables and tables emptied whole are left to DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipelines.duckdb_vacuum import MIN_ROWS, tables_due, vacuum_only_when_due

ROW_GROUP = 122_880
ROWS = 10 * ROW_GROUP  # ten full row groups


def _make_table(path: Path, rows: int = ROWS) -> None:
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA billing")
        connection.execute(
            "CREATE TABLE billing.invoice AS SELECT range AS invoice_id, 'payer ' || range AS payer "
            f"FROM range({rows})"
        )


def _stored_rows(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(
            "SELECT estimated_size FROM duckdb_tables() WHERE table_name = 'invoice'"
        ).fetchone()[0]


def _delete_with_policy(path: Path, where: str) -> None:
    """One run's connection: the policy, a delete spread over every row group, the closing checkpoint."""
    connection = duckdb.connect(str(path))
    with vacuum_only_when_due(connection):
        connection.execute(f"DELETE FROM billing.invoice WHERE {where}")
    connection.close()


def test_duckdb_alone_compacts_at_once(tmp_path: Path) -> None:
    """The baseline the policy changes: with 40% deleted over ten row groups, DuckDB's own checkpoint
    rewrites some of them straight away."""
    path = tmp_path / "plain.duckdb"
    _make_table(path)
    with duckdb.connect(str(path)) as connection:
        connection.execute("DELETE FROM billing.invoice WHERE invoice_id % 5 < 2")
    assert _stored_rows(path) < ROWS


def test_deleted_rows_below_half_are_kept_then_compacted_at_half(tmp_path: Path) -> None:
    path = tmp_path / "policy.duckdb"
    _make_table(path)

    _delete_with_policy(path, "invoice_id % 5 < 2")  # 40% deleted: not due
    assert _stored_rows(path) == ROWS
    with duckdb.connect(str(path)) as connection:
        assert tables_due(connection) == []

    _delete_with_policy(path, "invoice_id % 5 = 2")  # 60% deleted, but the policy looks before the run
    assert _stored_rows(path) == ROWS
    with duckdb.connect(str(path)) as connection:
        assert tables_due(connection) == ["billing.invoice"]

    _delete_with_policy(path, "invoice_id = 3")  # the next run that changes the table compacts it whole
    assert _stored_rows(path) == ROWS * 2 // 5 - 1
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT count(*), min(invoice_id) FROM billing.invoice").fetchone() == (
            ROWS * 2 // 5 - 1,
            4,
        )


def test_small_tables_are_never_due(tmp_path: Path) -> None:
    path = tmp_path / "small.duckdb"
    _make_table(path, rows=MIN_ROWS - 1)
    with duckdb.connect(str(path)) as connection:
        connection.execute("DELETE FROM billing.invoice WHERE invoice_id % 10 < 9")
        assert tables_due(connection) == []


def test_a_table_emptied_whole_is_dropped_without_vacuuming(tmp_path: Path) -> None:
    """dlt empties its staging tables at every load: those row groups go at any checkpoint."""
    path = tmp_path / "staging.duckdb"
    _make_table(path)
    _delete_with_policy(path, "true")
    assert _stored_rows(path) == 0


@pytest.mark.parametrize("odd_name", ['we"ird', "sp ace"])
def test_quoted_names(tmp_path: Path, odd_name: str) -> None:
    path = tmp_path / "names.duckdb"
    with duckdb.connect(str(path)) as connection:
        quoted = '"' + odd_name.replace('"', '""') + '"'
        connection.execute(f"CREATE SCHEMA {quoted}")
        connection.execute(f"CREATE TABLE {quoted}.{quoted} AS SELECT range AS i FROM range({ROWS})")
    with duckdb.connect(str(path)) as connection, vacuum_only_when_due(connection):
        connection.execute(f"DELETE FROM {quoted}.{quoted} WHERE i % 4 < 3")
    with duckdb.connect(str(path)) as connection:
        assert tables_due(connection) == [f"{odd_name}.{odd_name}"]


def _tasks(connection: duckdb.DuckDBPyConnection) -> int:
    return int(connection.execute("SELECT current_setting('max_vacuum_tasks')").fetchone()[0])


def test_the_setting_of_another_connection_to_the_file_is_put_back(tmp_path: Path) -> None:
    """DuckDB's setting belongs to the database instance, which every connection to the file in this
    process shares: a user's value is held back during the run only, and left alone when a table is due."""
    path = tmp_path / "shared.duckdb"
    _make_table(path)
    users = duckdb.connect(str(path))
    users.execute("SET max_vacuum_tasks = 7")
    runs = duckdb.connect(str(path))
    with vacuum_only_when_due(runs):
        assert _tasks(users) == 0
        runs.execute("DELETE FROM billing.invoice WHERE invoice_id % 5 < 3")  # 60%: due at the next run
    assert _tasks(users) == 7
    with vacuum_only_when_due(runs):
        assert _tasks(users) == 7
    runs.close()
    users.close()
