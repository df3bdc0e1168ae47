"""The job's DuckDB destination deletes the rows a merge replaces by the merge key alone where it lies within
the primary key (duckdb_merge.py): the same rows as dlt's `primary key OR merge key`, and to dlt, config
and state, still dlt's `duckdb`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from dlt.common.destination.reference import Destination
from dlt.destinations.impl.duckdb.duck import DuckDbClient
from dlt.destinations.job_client_impl import SqlJobClientBase
from dlt.destinations.sql_jobs import SqlMergeFollowupJob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.duckdb_merge import InvoiceDuckDb, InvoiceDuckDbClient, MergeKeyMergeJob
from pipelines.emulator import World
from pipelines.invoices import duckdb_destination, make_pipeline, run_job

from conftest import Harness, assert_database_equals_world

LINE_KEYS = (["invoice_id", "line_position"], ["invoice_id"])


def clause(job: type[SqlMergeFollowupJob], primary: list[str], merge: list[str]) -> str:
    (found,) = job.gen_key_table_clauses("stored", "staged", primary, merge, for_delete=True)
    return found


def test_a_merge_key_within_the_primary_key_is_the_whole_condition() -> None:
    assert " OR " in clause(SqlMergeFollowupJob, *LINE_KEYS)  # dlt's own, the slow plan in DuckDB
    assert clause(MergeKeyMergeJob, *LINE_KEYS) == (
        "FROM stored as d WHERE EXISTS (SELECT 1 FROM staged as s WHERE d.invoice_id = s.invoice_id)"
    )


@pytest.mark.parametrize(
    "keys",
    [(["invoice_id"], []), ([], ["invoice_id"]), (["invoice_id"], ["contract_id"]), (["a"], ["a", "b"])],
    ids=["primary key only", "merge key only", "other columns", "merge key wider"],
)
def test_other_keys_keep_dlts_condition(keys: tuple[list[str], list[str]]) -> None:
    assert clause(MergeKeyMergeJob, *keys) == clause(SqlMergeFollowupJob, *keys)


keys_with_nulls = st.tuples(st.none() | st.integers(0, 4), st.none() | st.integers(0, 3))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=st.lists(keys_with_nulls, max_size=25), staged=st.lists(keys_with_nulls, max_size=8))
def test_the_same_rows_are_deleted_as_by_dlts_condition(
    stored: list[tuple[int | None, int | None]], staged: list[tuple[int | None, int | None]]
) -> None:
    with duckdb.connect() as connection:
        for table, rows in (("stored", stored), ("staged", staged)):
            connection.execute(
                f"CREATE TABLE {table} (row_number INTEGER, invoice_id INTEGER, line_position INTEGER)"
            )
            if rows:
                connection.executemany(
                    f"INSERT INTO {table} VALUES (?, ?, ?)", [(n, *row) for n, row in enumerate(rows)]
                )

        def deleted(job: type[SqlMergeFollowupJob]) -> list[tuple[int]]:
            return connection.execute(f"SELECT d.row_number {clause(job, *LINE_KEYS)} ORDER BY 1").fetchall()

        assert deleted(MergeKeyMergeJob) == deleted(SqlMergeFollowupJob)


def test_the_job_destination_is_dlts_duckdb_with_this_merge(tmp_path: Path) -> None:
    pipeline = make_pipeline(
        "merge_probe",
        destination=duckdb_destination(str(tmp_path / "probe.duckdb")),
        pipelines_dir=str(tmp_path / "dlt"),
    )
    destination = pipeline.destination
    assert (destination.destination_type, destination.destination_name) == (
        "dlt.destinations.duckdb",
        "duckdb",
    )
    assert isinstance(pipeline.destination_client(), InvoiceDuckDbClient)
    # Ours replaces the generic merge job dlt's DuckDB client uses; a DuckDB job of dlt's own would be
    # skipped, so a dlt that brings one must be looked at again.
    assert DuckDbClient._create_merge_followup_jobs is SqlJobClientBase._create_merge_followup_jobs


def test_a_file_loaded_with_dlts_duckdb_goes_on_with_the_jobs(
    harness: Harness, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing pipeline (state, schema and file from dlt's own DuckDB factory) is carried on as it is."""

    def pipeline(destination: Any) -> dlt.Pipeline:
        return make_pipeline("carried_on", destination=destination, pipelines_dir=str(harness.pipelines_dir))

    theirs = pipeline(dlt.destinations.duckdb(str(harness.database)))
    run_job(theirs, accelerate=harness.source(), only="accelerate")
    destination_before = {key: theirs.state.get(key) for key in ("destination_type", "destination_name")}
    ours = pipeline(duckdb_destination(str(harness.database)))
    for _ in range(3):  # days that change, add and remove lines
        world.advance_day()
        summary = run_job(ours, accelerate=harness.source(), only="accelerate")
        assert summary.accelerate_read["unchanged"] > 0  # the stored versions were read
        assert_database_equals_world(harness.database, world)
    assert {key: ours.state.get(key) for key in destination_before} == destination_before
    assert "could not read" not in caplog.text


@pytest.mark.parametrize("naming", [None, "snake_case", "sql_cs_v1", "duck_case", "direct"])
def test_capabilities_are_dlts_without_resolving_a_configuration(
    naming: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked without a configuration, ours hands dlt's `adjust_capabilities` an unresolved one: the same
    capabilities as dlt's DuckDB, for every naming convention (case-sensitive ones are adjusted)."""
    convention = None
    if naming is not None:
        convention = importlib.import_module(f"dlt.common.normalizers.naming.{naming}").NamingConvention()
    arguments = {"credentials": ":memory:", "supports_transactions": True}
    theirs = dict(dlt.destinations.duckdb(**arguments).capabilities(naming=convention))
    resolved = []
    monkeypatch.setattr(
        Destination, "configuration", lambda self, *args, **kwargs: resolved.append(args) or pytest.fail()
    )
    ours = dict(InvoiceDuckDb(**arguments).capabilities(naming=convention))
    assert ours == theirs and not resolved
    # dlt's DuckDB reads no configuration in `adjust_capabilities` (it is dlt's default); one that starts
    # to would get a configuration that was never resolved, so a dlt that brings one must be looked at.
    assert dlt.destinations.duckdb.adjust_capabilities.__func__ is Destination.adjust_capabilities.__func__
