"""The command line as users meet it: real subprocesses, one-line errors, no secret anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import expected_tables

from pipelines.emulator import EmulatorServer, World

SECRET_KEY = "acc-SECRET-4c1d2e3f-5a6b-7c8d"


def cli(
    args: list[str], folder: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__", "RUNTIME__"))
    }
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
    with EmulatorServer(World(seed=3, invoices=60), accelerate_api_key=SECRET_KEY) as server:
        yield server


def test_missing_api_key_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(["run"], tmp_path, {"SOURCES__ACCELERATE__SUBDOMAIN": "acme"})
    assert_one_line_error(result, "sources.accelerate.api_key", "SOURCES__ACCELERATE__API_KEY")


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
