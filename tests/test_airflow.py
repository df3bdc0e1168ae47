"""The Airflow DAG as users deploy it: deploy/airflow/dags/invoices_dag.py run by Airflow's own `dag.test()`
in the Airflow virtualenv (.venv-airflow, created here when missing) against the emulator, which runs in
this process. The tables must equal the emulator's world, and nothing Airflow or dlt wrote may hold a key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock

from pipelines.emulator import EmulatorServer, World

from conftest import assert_database_equals_world, query

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = ROOT / ".venv-airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
# The pyproject.toml the Airflow virtualenv was installed from (its hash): a change reinstalls it.
INSTALLED_FROM = AIRFLOW_VENV / ".installed-from"
# Two test sessions at once (two checkouts, or xdist) must not install into the same folder together.
INSTALL_LOCK = (
    Path(tempfile.gettempdir()) / f"venv-airflow-{hashlib.sha256(bytes(ROOT)).hexdigest()[:12]}.lock"
)
DRIVER = ROOT / "deploy" / "airflow" / "run_dag_test.py"
ACCELERATE_KEY = "acc-SECRET-airflow-1"
QVALIA_KEY = "qv-SECRET-airflow-2"
# Creating the virtualenv takes 45-90 s with a warm network; a cold CI machine gets much longer.
INSTALL_TIMEOUT = 1200
RUN_TIMEOUT = 600


def ensure_airflow_venv() -> None:
    """The README's command, run only when .venv-airflow is missing or predates pyproject.toml's contents."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    with FileLock(str(INSTALL_LOCK)):
        if AIRFLOW_PYTHON.exists() and INSTALLED_FROM.exists() and INSTALLED_FROM.read_text() == wanted:
            return
        python = shutil.which("python3") or sys.executable
        for command in (
            [python, "-m", "venv", str(AIRFLOW_VENV)],
            [str(AIRFLOW_VENV / "bin" / "pip"), "install", "-q", "-e", ".[airflow]"],
        ):
            result = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
            )
            assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"
        INSTALLED_FROM.write_text(wanted)


def run_dag(
    folder: Path, server: EmulatorServer, accelerate_key: str | None = None, qvalia: bool = True
) -> subprocess.CompletedProcess:
    """The driver in the Airflow virtualenv, configured as a worker would be: dlt's environment variables
    for the sources, and the Qvalia key in the Airflow Variable `dlt_secrets_toml` (set the way Airflow
    reads Variables from the environment), so both ways of giving credentials are exercised."""
    inherited = ("SOURCES__", "DESTINATION__", "RUNTIME__", "PROVIDERS__", "AIRFLOW", "DLT_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(inherited)}
    env.update(
        AIRFLOW_HOME=str(folder / "airflow"),
        DLT_DATA_DIR=str(folder / "dlt"),
        AIRFLOW_VAR_INVOICES_DUCKDB_PATH=str(folder / "data" / "invoices.duckdb"),
        SOURCES__ACCELERATE__BASE_URL=server.accelerate_base_url,
        SOURCES__ACCELERATE__API_KEY=accelerate_key or server.accelerate_api_key,
    )
    if qvalia:
        env.update(
            SOURCES__QVALIA__BASE_URL=server.qvalia_base_url,
            SOURCES__QVALIA__ACCOUNT_REG_NO=server.account_reg_no,
            AIRFLOW_VAR_DLT_SECRETS_TOML=f'[sources.qvalia]\napi_key = "{server.qvalia_api_key}"\n',
        )
    return subprocess.run(
        [str(AIRFLOW_PYTHON), str(DRIVER)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def assert_no_key_anywhere(folder: Path, output: str, *keys: str) -> None:
    """Neither the run's output (where dag.test() writes the task logs) nor any file under AIRFLOW_HOME
    (log files, the metadata database) or dlt's folder holds a key."""
    files = [path for part in ("airflow", "dlt") for path in (folder / part).rglob("*") if path.is_file()]
    assert any(path.name == "airflow.db" for path in files)
    for key in keys:
        assert key not in output
        for path in files:
            assert key.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def airflow_venv() -> None:
    started = time.monotonic()
    ensure_airflow_venv()
    print(f"\n.venv-airflow ready in {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT)
def test_dag_loads_invoices_then_statuses_and_logs_no_key(airflow_venv: None, tmp_path: Path) -> None:
    world = World(seed=21, invoices=100)
    started = time.monotonic()
    with EmulatorServer(world, accelerate_api_key=ACCELERATE_KEY, qvalia_api_key=QVALIA_KEY) as server:
        result = run_dag(tmp_path, server)
    print(f"driver (db migrate + dag.test) in {time.monotonic() - started:.1f} s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "run state success" in result.stdout
    # the tasks' own summaries reached the output scanned for keys below
    assert "rows loaded: invoice 100, invoice_line" in output
    assert "qvalia: polled" in output

    database = tmp_path / "data" / "invoices.duckdb"
    assert_database_equals_world(database, world)
    assert query(database, "SELECT count(*) FROM billing.invoice_status")[0][0] > 0
    assert_no_key_anywhere(tmp_path, output, ACCELERATE_KEY, QVALIA_KEY)


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT)
def test_a_refused_key_fails_accelerate_with_one_line_and_qvalia_never_runs(
    airflow_venv: None, tmp_path: Path
) -> None:
    world = World(seed=22, invoices=20)
    with EmulatorServer(world, accelerate_api_key=ACCELERATE_KEY, qvalia_api_key=QVALIA_KEY) as server:
        wrong = "acc-SECRET-airflow-wrong-3"
        result = run_dag(tmp_path, server, accelerate_key=wrong)
        qvalia_calls = server.call_count(api="qvalia")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-6000:]
    assert "run state failed" in result.stdout
    assert "Accelerate answered 404 (not found or no permission)" in output
    assert qvalia_calls == 0
    assert_no_key_anywhere(tmp_path, output, wrong, ACCELERATE_KEY, QVALIA_KEY)


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT)
def test_without_qvalia_settings_the_dag_loads_invoices_and_skips_statuses(
    airflow_venv: None, tmp_path: Path
) -> None:
    world = World(seed=23, invoices=30)
    with EmulatorServer(world, accelerate_api_key=ACCELERATE_KEY, qvalia_api_key=QVALIA_KEY) as server:
        result = run_dag(tmp_path, server, qvalia=False)
        qvalia_calls = server.call_count(api="qvalia")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "qvalia: skipped (not configured" in output
    assert qvalia_calls == 0
    assert_database_equals_world(tmp_path / "data" / "invoices.duckdb", world)
    assert_no_key_anywhere(tmp_path, output, ACCELERATE_KEY)
