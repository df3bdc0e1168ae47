"""A run killed with SIGKILL anywhere (mid-extract, at the start of normalize or load, in the middle of the
load), then run again, ends equal to the world: nothing lost, nothing twice, the cursor never past a change.
Killed mid-load, each table holds either all of the killed run's changes or none of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.emulator import EmulatorServer, World

from conftest import assert_database_equals_world, expected_tables, query, table_rows


def job_env(folder: Path, server: EmulatorServer, qvalia: bool = False) -> dict[str, str]:
    """The environment of a scheduled run against the emulator, with dlt's state in `folder`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "RUNTIME__"))}
    env.update(
        DLT_DATA_DIR=str(folder / "dlt_data"),
        SOURCES__ACCELERATE__BASE_URL=server.accelerate_base_url,
        SOURCES__ACCELERATE__API_KEY=server.accelerate_api_key,
    )
    if qvalia:
        env.update(
            SOURCES__QVALIA__BASE_URL=server.qvalia_base_url,
            SOURCES__QVALIA__API_KEY=server.qvalia_api_key,
            SOURCES__QVALIA__ACCOUNT_REG_NO=server.account_reg_no,
        )
    return env


def kill_at(point: str, folder: Path, env: dict[str, str], *options: str) -> str:
    """Run `invoice-pipelines run --only accelerate` (or the CLI arguments after "--" in `options`) until
    it pauses at `point` (see pause_at_step.py), SIGKILL it there, and say where it was."""
    marker = folder / "paused"
    driver = Path(__file__).with_name("pause_at_step.py")
    paused = subprocess.Popen(
        [sys.executable, str(driver), point, str(marker), *options], cwd=folder, env=env
    )
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert paused.poll() is None and time.monotonic() < deadline, f"the run never reached {point}"
        time.sleep(0.05)
    os.kill(paused.pid, signal.SIGKILL)
    paused.wait(timeout=60)
    where = marker.read_text()
    marker.unlink()
    return where


def kill_at_start_of(step: str, folder: Path, env: dict[str, str]) -> None:
    kill_at(step, folder, env)


def test_killed_run_then_rerun_ends_equal_to_the_world(tmp_path: Path) -> None:
    world = World(seed=5, invoices=25_000, lines_per_invoice=2)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server)
        command = [sys.executable, "-m", "pipelines", "run"]
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        seen = []
        assert first.stderr is not None
        for line in first.stderr:
            seen.append(line)
            if "lines read" in line:  # the first batch is out of the parser and handed to dlt: mid-extract
                os.kill(first.pid, signal.SIGKILL)
                break
        first.wait(timeout=60)
        assert first.returncode == -signal.SIGKILL, "".join(seen)

        world.advance_day()
        second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert_database_equals_world(tmp_path / "invoices.duckdb", world)


@pytest.mark.parametrize("step", ["normalize", "load"])
def test_killed_at_normalize_or_load_then_rerun_ends_equal_to_the_world(tmp_path: Path, step: str) -> None:
    world = World(seed=6, invoices=400)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server)
        command = [sys.executable, "-m", "pipelines", "run", "--only", "accelerate"]
        assert (
            subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120).returncode == 0
        )
        world.advance_day()
        kill_at_start_of(step, tmp_path, env)

        world.advance_day()
        rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert_database_equals_world(tmp_path / "invoices.duckdb", world)


def test_create_from_order_after_an_interrupted_run_still_records_the_order(tmp_path: Path) -> None:
    world = World(seed=8, invoices=100)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server, qvalia=True)
        kill_at_start_of("load", tmp_path, env)

        order_id = sorted(world.orders)[0]
        command = [
            sys.executable,
            "-m",
            "pipelines",
            "create-from-order",
            order_id,
            "--send-method",
            "peppol",
        ]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        recorded = query(
            tmp_path / "invoices.duckdb", "SELECT integration_id, state FROM billing.invoice_from_order"
        )
        assert recorded == [(order_id, "created")]
        assert world.creations[order_id] == 1
        assert_database_equals_world(tmp_path / "invoices.duckdb", world)


def run_cli(folder: Path, env: dict[str, str], *arguments: str) -> str:
    """`invoice-pipelines run` with these arguments, which must succeed; what it printed."""
    command = [sys.executable, "-m", "pipelines", "run", *arguments]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def holds_exactly(
    rows: list[dict[str, Any]], expected: dict[Any, dict[str, Any]], key: tuple[str, ...]
) -> bool:
    """The table's rows are exactly `expected` (a null is the same as a column never sent)."""
    actual = {tuple(row[k] for k in key): {k: v for k, v in row.items() if v is not None} for row in rows}
    wanted = {
        k if isinstance(k, tuple) else (k,): {n: v for n, v in row.items() if v is not None}
        for k, row in expected.items()
    }
    return len(actual) == len(rows) and actual == wanted


@pytest.mark.parametrize(
    ("point", "where"),
    [
        # the invoice merge committed, dlt not told yet: the rerun runs it again
        ("job-committed", ["--table", "invoice", "--file-format", "sql"]),
        # old lines deleted and new ones inserted, the transaction still open
        ("merge-uncommitted", ["--table", "invoice_line"]),
        # every table merged, the load not yet in _dlt_loads
        ("package-completing", []),
    ],
)
def test_killed_in_the_middle_of_the_load_then_rerun_ends_equal_to_the_world(
    tmp_path: Path, point: str, where: list[str]
) -> None:
    world = World(seed=9, invoices=150)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server)
        run_cli(tmp_path, env, "--only", "accelerate")
        before = expected_tables(SimpleNamespace(invoices=deepcopy(world.invoices)))
        world.advance_day()
        after = expected_tables(world)
        paused_at = kill_at(point, tmp_path, env, *where)

        database = tmp_path / "invoices.duckdb"
        for name, expected_before, expected_after, key in [
            ("invoice", before[0], after[0], ("invoice_id",)),
            ("invoice_line", before[1], after[1], ("invoice_id", "line_position")),
        ]:
            rows = table_rows(database, name)
            assert holds_exactly(rows, expected_before, key) or holds_exactly(rows, expected_after, key), (
                f"killed at {paused_at}, {name} holds part of the run's changes"
            )
        if point == "merge-uncommitted":
            assert holds_exactly(
                table_rows(database, "invoice_line"), before[1], ("invoice_id", "line_position")
            )

        world.advance_day()
        run_cli(tmp_path, env, "--only", "accelerate")
        assert_database_equals_world(database, world)


def test_killed_while_loading_qvalia_statuses_then_rerun_records_each_change_once(tmp_path: Path) -> None:
    world = World(seed=10, invoices=100)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server, qvalia=True)
        run_cli(tmp_path, env)
        world.advance_day()
        history_merge = ["--schema", "qvalia", "--table", "invoice_status_history", "--file-format", "sql"]
        kill_at("job-committed", tmp_path, env, *history_merge, "--", "run")

        world.advance_day()
        run_cli(tmp_path, env)
        database = tmp_path / "invoices.duckdb"
        assert_database_equals_world(database, world)
        twice = query(
            database,
            "SELECT integration_id, fingerprint FROM billing.invoice_status_history GROUP BY ALL HAVING count(*) > 1",
        )
        assert twice == []
        statuses = {row["integration_id"]: row for row in table_rows(database, "invoice_status")}
        expected = {
            str(invoice_id): world.qvalia_status(str(invoice_id))
            for invoice_id, invoice in world.invoices.items()
            if invoice["invoice_type"] == "Sales" and world.qvalia_status(str(invoice_id)) is not None
        }
        assert sorted(statuses) == sorted(expected)
        for integration_id, status in expected.items():
            assert statuses[integration_id]["status"] == status["status"], integration_id
        unrecorded = query(
            database,
            "SELECT count(*) FROM billing.invoice_status s WHERE NOT EXISTS (SELECT 1 FROM "
            "billing.invoice_status_history h WHERE h.integration_id = s.integration_id "
            "AND h.fingerprint = s.fingerprint)",
        )
        assert unrecorded == [(0,)], "a status stored without its history row"


@pytest.mark.parametrize("table", ["invoice", "invoice_line"])
@pytest.mark.parametrize("run", ["backfill", "later"])
def test_killed_after_a_copy_committed_then_rerun_loads_its_rows_once(
    tmp_path: Path, run: str, table: str
) -> None:
    """dlt runs a job again when the run died after the job committed and before dlt recorded it. The
    backfill's appended tables and the staged rows of a merge (declared unique) must not keep them twice
    (pipelines/duckdb_rerun.py)."""
    world = World(seed=9, invoices=150)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server)
        if run == "later":
            run_cli(tmp_path, env, "--only", "accelerate")
            world.advance_day()
        paused_at = kill_at("job-committed", tmp_path, env, "--table", table, "--file-format", "parquet")
        assert paused_at.startswith(f"job-committed {table}.")
        run_cli(tmp_path, env, "--only", "accelerate")
        assert_database_equals_world(tmp_path / "invoices.duckdb", world)


def test_a_backfill_finished_after_another_pipeline_filled_the_dataset_replaces_its_rows(
    tmp_path: Path,
) -> None:
    """A backfill decides to append when it finds the tables empty, and its package may be loaded only
    later: here after another pipeline (its own state folder, the same DuckDB file) loaded everything."""
    world = World(seed=9, invoices=150)
    with EmulatorServer(world) as server:
        env = job_env(tmp_path, server)
        kill_at_start_of("load", tmp_path, env)
        run_cli(tmp_path, {**env, "DLT_DATA_DIR": str(tmp_path / "another_pipeline")}, "--only", "accelerate")
        world.advance_day()
        run_cli(tmp_path, env, "--only", "accelerate")  # finishes the appending package, then merges the day
        database = tmp_path / "invoices.duckdb"
        assert_database_equals_world(database, world)
        assert query(database, "SELECT count(*) - count(DISTINCT invoice_id) FROM billing.invoice") == [(0,)]
