"""A run killed with SIGKILL in the middle of extract, then run again, ends equal to the world."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.emulator import EmulatorServer, World

from conftest import assert_database_equals_world, query


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


def kill_at_start_of(step: str, folder: Path, env: dict[str, str]) -> None:
    """Run `invoice-pipelines run --only accelerate` until dlt's `step` starts, then SIGKILL it there."""
    marker = folder / "paused"
    driver = Path(__file__).with_name("pause_at_step.py")
    paused = subprocess.Popen([sys.executable, str(driver), step, str(marker)], cwd=folder, env=env)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert paused.poll() is None and time.monotonic() < deadline, "the run never reached the step"
        time.sleep(0.05)
    os.kill(paused.pid, signal.SIGKILL)
    paused.wait(timeout=60)
    marker.unlink()


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
