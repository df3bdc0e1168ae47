"""The command line as users meet it: real subprocesses, one-line errors, no secret anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines.emulator import EmulatorServer, World

from conftest import environment_without_dlt_settings, expected_tables

SECRET_KEY = "acc-SECRET-4c1d2e3f-5a6b-7c8d"
QVALIA_SECRET = "qv-SECRET-9a8b7c6d-5e4f"


def cli(
    args: list[str], folder: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    clean = environment_without_dlt_settings()
    clean["DLT_DATA_DIR"] = str(folder / "dlt_data")
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=folder,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture
def secret_emulator() -> EmulatorServer:
    world = World(seed=3, invoices=60)
    with EmulatorServer(world, accelerate_api_key=SECRET_KEY, qvalia_api_key=QVALIA_SECRET) as server:
        yield server


def test_missing_api_key_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(["run"], tmp_path, {"SOURCES__ACCELERATE__SUBDOMAIN": "acme"})
    assert_one_line_error(result, "sources.accelerate.api_key", "SOURCES__ACCELERATE__API_KEY")


def test_create_from_order_without_qvalia_key_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(["create-from-order", "ORD-1", "--send-method", "peppol"], tmp_path)
    assert_one_line_error(result, "sources.qvalia.api_key is not set", "SOURCES__QVALIA__API_KEY")


def test_missing_subdomain_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(["run"], tmp_path, {"SOURCES__ACCELERATE__API_KEY": SECRET_KEY})
    assert_one_line_error(result, "sources.accelerate.subdomain")
    assert SECRET_KEY not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SOURCES__ACCELERATE__SUBDOMAIN": "acme.example.com"}, "plain DNS label"),
        ({"SOURCES__ACCELERATE__BASE_URL": "http://acme.example.com/api"}, "must use https"),
        (
            {"SOURCES__ACCELERATE__SUBDOMAIN": "acme", "SOURCES__ACCELERATE__START_DATE": "yesterday"},
            "start_date",
        ),
    ],
)
def test_malformed_settings_are_one_clear_line(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    result = cli(["run"], tmp_path, {"SOURCES__ACCELERATE__API_KEY": SECRET_KEY, **env})
    assert_one_line_error(result, fragment)
    assert SECRET_KEY not in result.stderr + result.stdout


def test_unknown_qvalia_environment_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        "SOURCES__QVALIA__API_KEY": "k",
        "SOURCES__QVALIA__ACCOUNT_REG_NO": "1",
        "SOURCES__QVALIA__ENVIRONMENT": "staging",
    }
    result = cli(["run", "--only", "qvalia"], tmp_path, env)
    assert_one_line_error(result, "sources.qvalia.environment must be one of production, qa")


def test_unknown_destination_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(["run", "--destination", "nosuchwarehouse"], tmp_path, {"SOURCES__ACCELERATE__API_KEY": "k"})
    assert_one_line_error(result, "unknown destination 'nosuchwarehouse'")


def test_run_loads_and_leaves_no_secret_in_database_or_working_folder(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    env = {
        "SOURCES__ACCELERATE__BASE_URL": secret_emulator.accelerate_base_url,
        "SOURCES__ACCELERATE__API_KEY": SECRET_KEY,
    }
    result = cli(["-v", "run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "rows loaded: invoice" in result.stdout
    database = tmp_path / "invoices.duckdb"
    with duckdb.connect(str(database), read_only=True) as connection:
        count = connection.sql("SELECT count(*) FROM billing.invoice").fetchall()[0][0]
    assert count == len(expected_tables(secret_emulator.world)[0])
    leaks = [
        path for path in tmp_path.rglob("*") if path.is_file() and SECRET_KEY.encode() in path.read_bytes()
    ]
    assert leaks == []
    assert SECRET_KEY not in result.stdout + result.stderr


def test_wrong_key_error_does_not_echo_the_key(tmp_path: Path, secret_emulator: EmulatorServer) -> None:
    env = {
        "SOURCES__ACCELERATE__BASE_URL": secret_emulator.accelerate_base_url,
        "SOURCES__ACCELERATE__API_KEY": "wrong-SECRET-key-000",
    }
    result = cli(["run"], tmp_path, env)
    assert_one_line_error(result, "404", "sources.accelerate.api_key")
    assert "wrong-SECRET-key-000" not in result.stderr + result.stdout


def test_demo_command_loads_the_demo_database(tmp_path: Path) -> None:
    result = cli(["demo"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "business day" in result.stdout and "top payers" in result.stdout
    with duckdb.connect(str(tmp_path / "invoices_demo.duckdb"), read_only=True) as connection:
        invoices = connection.sql("SELECT count(*) FROM billing.invoice").fetchall()[0][0]
        lines = connection.sql("SELECT count(*) FROM billing.invoice_line").fetchall()[0][0]
    assert invoices > 0 and lines > 0


def qvalia_env(server: EmulatorServer) -> dict[str, str]:
    return {
        "SOURCES__ACCELERATE__BASE_URL": server.accelerate_base_url,
        "SOURCES__ACCELERATE__API_KEY": server.accelerate_api_key,
        "SOURCES__QVALIA__BASE_URL": server.qvalia_base_url,
        "SOURCES__QVALIA__API_KEY": server.qvalia_api_key,
        "SOURCES__QVALIA__ACCOUNT_REG_NO": server.account_reg_no,
    }


def test_run_loads_statuses_after_invoices_and_only_runs_one_side(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    env = qvalia_env(secret_emulator)
    result = cli(["run", "--only", "accelerate"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "invoice_status" not in result.stdout
    result = cli(["-v", "run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "qvalia: polled" in result.stdout and "invoice_status" in result.stdout
    leaks = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and any(key.encode() in path.read_bytes() for key in (SECRET_KEY, QVALIA_SECRET))
    ]
    assert leaks == []
    assert QVALIA_SECRET not in result.stdout + result.stderr
    dlt_cli = str(Path(sys.executable).parent / "dlt")
    clean = {**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt_data")}
    info = subprocess.run(
        [dlt_cli, "pipeline", "invoices", "info"], cwd=tmp_path, env=clean, capture_output=True, text=True
    )
    assert info.returncode == 0 and "dataset_name: billing" in info.stdout, info.stderr
    trace = subprocess.run(
        [dlt_cli, "pipeline", "-v", "invoices", "trace"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert trace.returncode == 0 and "`sources.qvalia.api_key` = <secret>" in trace.stdout, trace.stderr
    assert SECRET_KEY not in trace.stdout and QVALIA_SECRET not in trace.stdout


def test_run_without_qvalia_settings_skips_it_and_says_so(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    env = {k: v for k, v in qvalia_env(secret_emulator).items() if "QVALIA" not in k}
    result = cli(["run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "qvalia: skipped (not configured" in result.stdout
    result = cli(["run", "--only", "qvalia"], tmp_path, env)
    assert_one_line_error(result, "sources.qvalia.api_key")


def test_create_from_order_reports_each_id_and_fails_if_any_failed(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    good = sorted(secret_emulator.world.orders)[:2]
    args = ["create-from-order", good[0], "ORD-UNKNOWN", good[1], "--send-method", "peppol"]
    result = cli(args, tmp_path, qvalia_env(secret_emulator))
    assert result.returncode == 1
    assert f"{good[0]}: created" in result.stdout and f"{good[1]}: created" in result.stdout
    assert "ORD-UNKNOWN: failed" in result.stdout
    again = cli(
        ["create-from-order", good[0], "--send-method", "peppol"], tmp_path, qvalia_env(secret_emulator)
    )
    assert again.returncode == 0 and f"{good[0]}: skipped" in again.stdout
    assert secret_emulator.world.creations[good[0]] == 1


def test_create_from_order_killed_after_the_call_is_not_created_twice(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    server = secret_emulator
    order_id = sorted(server.world.orders)[3]
    server.faults.timeout_sleep_s = 2.0
    command = [sys.executable, "-m", "pipelines", "create-from-order", order_id, "--send-method", "email"]
    env = {**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt_data"), **qvalia_env(server)}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: server.calls[("qvalia", "status", order_id)] >= 1)
    server.inject("timeout", times=1, api="qvalia")  # the create call stalls, then creates the invoice
    _wait_for(lambda: server.calls[("qvalia", "createandsend", order_id)] >= 1)
    process.kill()
    process.wait(timeout=30)
    _wait_for(lambda: server.world.creations[order_id] == 1)
    rerun = cli(["create-from-order", order_id, "--send-method", "email"], tmp_path, qvalia_env(server))
    assert rerun.returncode == 0, rerun.stderr
    assert f"{order_id}: skipped" in rerun.stdout
    assert server.world.creations[order_id] == 1
    with duckdb.connect(str(tmp_path / "invoices.duckdb"), read_only=True) as connection:
        rows = connection.sql("SELECT integration_id, state FROM billing.invoice_from_order").fetchall()
    assert rows == [(order_id, "created")]


def _wait_for(condition: object, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_emulator_command_serves_both_apis_and_prints_where(tmp_path: Path) -> None:
    import requests

    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "emulator", "--port", "0", "--invoices", "20"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = {}
        for line in process.stdout:
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                printed[key.strip()] = value.strip()
            if "Qvalia account_reg_no" in printed:
                break
        base_url = printed["Accelerate base_url"]
        response = requests.get(
            f"{base_url}/invoices/since/2000-01-01/",
            headers={"api-key": printed["Accelerate api_key"]},
            timeout=10,
        )
        assert response.status_code == 200 and len(response.json()["items"]) == 20
        status = requests.post(
            f"{printed['Qvalia base_url']}/account/{printed['Qvalia account_reg_no']}/action/invoice/outgoing/status/x",
            json={},
            headers={"Authorization": printed["Qvalia api_key"]},
            timeout=10,
        )
        assert status.status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_second_run_at_the_same_time_refuses_and_the_first_ends_correct(
    tmp_path: Path, secret_emulator: EmulatorServer
) -> None:
    from conftest import assert_database_equals_world

    server = secret_emulator
    server.faults.latency_s = 2.0
    env = {**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt_data")}
    env.update({k: v for k, v in qvalia_env(server).items() if "QVALIA" not in k})
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(lambda: server.call_count(api="accelerate") >= 1)
    second = cli(["run"], tmp_path, {k: v for k, v in env.items() if k.startswith("SOURCES__")})
    assert_one_line_error(second, "another run of pipeline 'invoices' is in progress")
    assert first.wait(timeout=120) == 0
    server.faults.latency_s = 0
    assert_database_equals_world(tmp_path / "invoices.duckdb", server.world)
