"""Run the invoices DAG once, in this process, with Airflow's `dag.test()`: what tests/test_airflow.py
runs in the Airflow virtualenv, and a way to try the DAG on a laptop before deploying it.

Needs AIRFLOW_HOME set to a scratch folder (its SQLite metadata database is created there) and the job's
settings in the environment, as on a worker. Retries are turned off here, so that a failing task ends the
run at once instead of waiting out `retry_delay`. Exits 0 only if the run's state is success.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
DAG_ID = "invoices"


def main() -> int:
    if not os.environ.get("AIRFLOW_HOME"):
        print("set AIRFLOW_HOME to a scratch folder: its metadata database is created there", file=sys.stderr)
        return 2
    # Airflow reads its configuration when it is first imported: set it before.
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    import airflow
    from airflow.utils import db

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # earlier Airflow 3 releases
        from airflow.models.dagbag import DagBag

    started = time.monotonic()
    db.upgradedb()
    print(f"airflow {airflow.__version__}: db migrate in {time.monotonic() - started:.1f} s", flush=True)

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"import error in {path}: {error}", file=sys.stderr)
        return 1
    dag = bag.get_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0

    started = time.monotonic()
    run = dag.test()
    state = str(run.state) if run is not None else "none"
    print(f"dag {DAG_ID}: run state {state} in {time.monotonic() - started:.1f} s", flush=True)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
