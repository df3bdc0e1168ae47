"""The Airflow 3 DAG of the invoices job: every day, Accelerate invoices, then the Qvalia statuses of what
they loaded, into one dlt pipeline `invoices`. Copy this file into your dags folder as it is.

Plain tasks call `pipelines.invoices.run_job`, one side each, rather than dlt's `PipelineTasksGroup`: that
helper calls `pipeline.run` itself, so the job's run lock, one-line errors, run summary and "Qvalia not
configured" rule would be lost, and it builds the sources (and reads their settings) when the file is parsed.

Credentials, the dlt way, on the workers: `SOURCES__ACCELERATE__API_KEY`, `SOURCES__QVALIA__API_KEY`...
environment variables, or the Airflow Variable `dlt_secrets_toml` holding a secrets.toml (dlt reads it by
itself). Where the data goes: the Airflow Variables `invoices_destination` (a dlt destination name, default
duckdb, configured the dlt way), `invoices_dataset` (default billing) and `invoices_duckdb_path` (default
$AIRFLOW_HOME/data/invoices.duckdb); Airflow also reads each from `AIRFLOW_VAR_<NAME IN CAPITALS>`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Variable, dag, task, task_group

DEFAULT_DESTINATION = "duckdb"
DEFAULT_DATASET = "billing"
DUCKDB_FILE = "invoices.duckdb"
# Otherwise dlt's Airflow provider asks for every setting it finds nowhere else as an Airflow Variable of its
# own name: about 800 lookups per run, each a call to Airflow's API server (12 s per run measured with
# dag.test, 0.3 s limited so). Limited as dlt's vault providers for Google and AWS are by default, it still
# reads `dlt_secrets_toml` and secrets stored as Variables. Set these on the workers to override.
DLT_AIRFLOW_PROVIDER = {
    "PROVIDERS__AIRFLOW_SECRETS__ONLY_SECRETS": "true",
    "PROVIDERS__AIRFLOW_SECRETS__ONLY_TOML_FRAGMENTS": "true",
}


@task
def accelerate() -> None:
    """Invoices and their lines updated since the stored cursor (minus lookback_days)."""
    _run_job("accelerate")


@task
def qvalia() -> None:
    """The e-invoice status of every open sales invoice that Accelerate loaded."""
    _run_job("qvalia")


@dag(
    dag_id="invoices",
    schedule="0 5 * * *",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["dlt", "invoices"],
    doc_md=__doc__,
)
def invoices_dag() -> None:
    @task_group(group_id="invoices")
    def invoices() -> None:
        accelerate() >> qvalia()

    invoices()


def _run_job(only: str) -> None:
    """One side of the job; a `PipelineError` (one line, no secret) fails the task so Airflow retries it.
    The job's modules are imported here, not at the top, so that parsing this file stays cheap."""
    for name, value in DLT_AIRFLOW_PROVIDER.items():
        os.environ.setdefault(name, value)
    from pipelines.invoices import qvalia_configured, run_job

    if only == "qvalia" and not qvalia_configured():
        print("qvalia: skipped (not configured: set sources.qvalia.api_key and account_reg_no)")
        return
    summary = run_job(_pipeline(), only=only)
    for line in summary.lines():
        print(line)


def _pipeline() -> Any:
    import dlt

    from pipelines.invoices import PIPELINE_NAME, duckdb_destination, make_pipeline

    destination: Any = Variable.get("invoices_destination", default=DEFAULT_DESTINATION)
    if destination == "duckdb" and dlt.secrets.get("destination.duckdb.credentials") is None:
        airflow_home = os.environ.get("AIRFLOW_HOME", "~/airflow")
        path = Path(Variable.get("invoices_duckdb_path", default=f"{airflow_home}/data/{DUCKDB_FILE}"))
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        destination = duckdb_destination(str(path))
    dataset = Variable.get("invoices_dataset", default=DEFAULT_DATASET)
    return make_pipeline(PIPELINE_NAME, destination=destination, dataset_name=dataset)


invoices_dag()
