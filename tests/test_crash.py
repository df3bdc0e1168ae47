"""A run killed with SIGKILL in the middle of extract, then run again, ends equal to the world."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipelines.emulator import EmulatorServer, World

from conftest import assert_database_equals_world


def test_killed_run_then_rerun_ends_equal_to_the_world(tmp_path: Path) -> None:
    world = World(seed=5, invoices=25_000, lines_per_invoice=2)
    with EmulatorServer(world) as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "RUNTIME__"))},
            "DLT_DATA_DIR": str(tmp_path / "dlt_data"),
            "SOURCES__ACCELERATE__BASE_URL": server.accelerate_base_url,
            "SOURCES__ACCELERATE__API_KEY": server.accelerate_api_key,
        }
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
