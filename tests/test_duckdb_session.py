"""A run on the job's own DuckDB file goes through one connection, opened for the run and closed after it,
also when the run fails; the memory cap still reaches every step; DuckDB credentials the user configured
are left to dlt."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from pipelines.duckdb_memory import cap_load_memory, own_credentials
from pipelines.duckdb_session import one_connection
from pipelines.errors import DestinationBusyError
from pipelines.invoices import duckdb_destination, make_pipeline, run_source

from conftest import Harness, query

MARKER = "opened_by_this_run"


def _pipeline(tmp_path: Path, destination: Any) -> dlt.Pipeline:
    return make_pipeline("session_test", destination=destination, pipelines_dir=str(tmp_path / "dlt"))


def _databases(pipeline: dlt.Pipeline) -> set[str]:
    with pipeline.sql_client() as client:
        return {row[0] for row in client.execute_sql("SELECT database_name FROM duckdb_databases()")}


def _memory_limit(pipeline: dlt.Pipeline) -> str:
    with pipeline.sql_client() as client:
        return str(client.execute_sql("SELECT current_setting('memory_limit')")[0][0])


@dlt.source(name="probe")
def probe_source(seen: dict[str, Any], fail: bool = False) -> Any:
    @dlt.resource(name="probe_rows", write_disposition="replace")
    def probe_rows() -> Iterator[dict[str, int]]:
        pipeline = dlt.current.pipeline()
        credentials = pipeline.destination.config_params.get(
            "credentials"
        )  # a path, or none, when dlt resolves them
        connection = credentials.external_conn() if hasattr(credentials, "external_conn") else None
        seen["connection"] = connection
        if connection is not None:
            # attached to the database instance: visible to every connection dlt borrows from it
            connection.execute(f"ATTACH ':memory:' AS {MARKER}")
        seen["databases_in_run"] = _databases(pipeline)
        if fail:
            raise ValueError("the source broke")
        yield from ({"n": n} for n in range(3))

    return probe_rows


def _opens_read_write(database: Path) -> bool:
    """Another process can open the file for writing only when no connection holds it."""
    code = f"import duckdb; duckdb.connect({str(database)!r}).close()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every DuckDB file opened in this process (dlt imports duckdb and calls `duckdb.connect`)."""
    opened: list[str] = []
    connect = duckdb.connect

    def counting_connect(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
        opened.append(str(database))
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting_connect)
    return opened


def test_dlt_reads_and_loads_through_the_runs_one_connection(tmp_path: Path, connects: list[str]) -> None:
    database = tmp_path / "own.duckdb"
    pipeline = _pipeline(tmp_path, duckdb_destination(str(database)))
    seen: dict[str, Any] = {}
    run_source(pipeline, probe_source(seen))
    assert connects == [str(database)]  # the state sync, the read, each load job and the completion

    assert seen["connection"] is not None
    assert MARKER in seen["databases_in_run"]  # the resource's read went through the same instance
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM probe_rows")[0][0] == 3
    # closed when the run ended: the marker is gone with the instance, and the file is free
    assert pipeline.destination.config_params["credentials"].external_conn() is None
    assert MARKER not in _databases(pipeline)
    assert _opens_read_write(database)


def test_a_failing_run_closes_its_connection(tmp_path: Path) -> None:
    database = tmp_path / "own.duckdb"
    pipeline = _pipeline(tmp_path, duckdb_destination(str(database)))
    seen: dict[str, Any] = {}
    with pytest.raises(PipelineStepFailed, match="the source broke"):
        run_source(pipeline, probe_source(seen, fail=True))
    assert seen["connection"] is not None
    assert pipeline.destination.config_params["credentials"].external_conn() is None
    assert _opens_read_write(database)


def test_each_step_gets_the_memory_cap_of_the_moment(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, duckdb_destination(str(tmp_path / "own.duckdb")))
    with one_connection(pipeline):
        capped = _memory_limit(pipeline)
        cap_load_memory(pipeline.destination, capped=False)
        lifted = _memory_limit(pipeline)
        cap_load_memory(pipeline.destination, capped=True)
        capped_again = _memory_limit(pipeline)
    assert capped == capped_again != lifted
    assert "MiB" in capped and float(capped.split()[0]) < 64  # DuckDB prints 64MB as 61.0 MiB


def test_the_runs_connection_holds_back_vacuuming(tmp_path: Path) -> None:
    """Every step of the run sees the vacuum setting the job chose when it opened the file (duckdb_vacuum.py)."""
    pipeline = _pipeline(tmp_path, duckdb_destination(str(tmp_path / "own.duckdb")))
    with one_connection(pipeline), pipeline.sql_client() as client:
        tasks = client.execute_sql("SELECT current_setting('max_vacuum_tasks')")[0][0]
    assert int(tasks) == 0
    with pipeline.sql_client() as client:  # dlt's own connection, after the run: DuckDB's default
        assert int(client.execute_sql("SELECT current_setting('max_vacuum_tasks')")[0][0]) > 0


def test_credentials_the_user_configured_are_left_to_dlt(tmp_path: Path, connects: list[str]) -> None:
    database = tmp_path / "users.duckdb"
    pipeline = _pipeline(tmp_path, dlt.destinations.duckdb(str(database)))
    seen: dict[str, Any] = {}
    run_source(pipeline, probe_source(seen))
    assert seen["connection"] is None
    assert len(connects) > 1  # dlt opens the file for each step and job
    assert MARKER not in seen["databases_in_run"]
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM probe_rows")[0][0] == 3
    assert _opens_read_write(database)


@pytest.mark.parametrize(
    "setting",
    [
        "DESTINATION__DUCKDB__CREDENTIALS",
        "DESTINATION__DUCKDB__CREDENTIALS__DATABASE",
        "SESSION_TEST__DESTINATION__DUCKDB__CREDENTIALS",  # scoped to the pipeline: dlt's rule wins
    ],
)
def test_a_duckdb_file_named_in_the_config_gets_the_jobs_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connects: list[str], setting: str
) -> None:
    database = tmp_path / "configured.duckdb"
    monkeypatch.setenv(setting, str(database))
    if setting.startswith("SESSION_TEST"):
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "not_this_one.duckdb"))
    pipeline = _pipeline(tmp_path, "duckdb")
    assert own_credentials(pipeline.destination) is not None
    seen: dict[str, Any] = {}
    run_source(pipeline, probe_source(seen))
    assert seen["connection"] is not None and connects[-1] == str(database)
    assert query(database, "SELECT count(*) FROM billing.probe_rows") == [(3,)]


def test_duckdb_credentials_with_settings_of_their_own_are_used_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "tuned.duckdb"
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__DATABASE", str(database))
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "300MB"}')
    pipeline = _pipeline(tmp_path, "duckdb")
    assert own_credentials(pipeline.destination) is None
    seen: dict[str, Any] = {}
    run_source(pipeline, probe_source(seen))
    assert seen["connection"] is None
    assert _memory_limit(pipeline).startswith("286.1 MiB")  # theirs, not the job's 64MB
    assert query(database, "SELECT count(*) FROM billing.probe_rows") == [(3,)]


@pytest.mark.parametrize("ours", [True, False], ids=["job's file", "user's credentials"])
def test_a_duckdb_file_held_by_another_process_fails_with_one_line(tmp_path: Path, ours: bool) -> None:
    database = tmp_path / "held.duckdb"
    duckdb.connect(str(database)).close()  # creates the file
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(database)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        destination = duckdb_destination(str(database)) if ours else dlt.destinations.duckdb(str(database))
        pipeline = _pipeline(tmp_path, destination)
        with pytest.raises(DestinationBusyError) as busy:
            run_source(pipeline, probe_source({}))
    finally:
        holder.kill()
        holder.wait()
    message = str(busy.value)
    assert message == (
        f"the DuckDB file {database} is open in another process (PID {holder.pid}): close its connection "
        "there (a notebook, the DuckDB CLI) and run again"
    )
    # once it is closed, the same pipeline runs
    seen: dict[str, Any] = {}
    run_source(pipeline, probe_source(seen))
    assert query(database, "SELECT count(*) FROM billing.probe_rows") == [(3,)]


# A reader is enough: a file open in one process, even read-only, cannot be opened for writing in another.
HOLD_FILE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1], read_only=True)
print("holding", flush=True)
time.sleep(120)
"""


def test_a_job_holds_the_file_once_for_both_sources(harness: Harness, connects: list[str]) -> None:
    summary = harness.run_both()
    assert summary.rows["invoice"] > 0 and summary.qvalia is not None and summary.qvalia["polled"] > 0
    assert connects == [str(harness.database)]  # not let go between Accelerate and Qvalia
    assert _opens_read_write(harness.database)


def test_a_relative_path_is_placed_by_dlts_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    pipeline = _pipeline(tmp_path, duckdb_destination("relative.duckdb"))
    run_source(pipeline, probe_source({}))
    assert connects == [str(tmp_path / "relative.duckdb")]  # where dlt itself would have opened it
    assert query(tmp_path / "relative.duckdb", "SELECT count(*) FROM billing.probe_rows") == [(3,)]
