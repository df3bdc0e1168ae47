"""The console script's collector settings (pipelines/short_process.py), each in a process of its own:
frozen objects in the test process would keep its garbage, DuckDB connections included, for the rest of
the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from pipelines.emulator import EmulatorServer, World

from conftest import expected_tables

# Runs the console script's entry point with a watch on Python's collector: every collection that starts
# before anything is frozen (that is, while the command imports), and what the collector still tracks once
# every exit handler but this one (registered first, so run last) is done.
WATCHED_COMMAND = """
import atexit, gc, sys
before_freeze = []
def watch(phase, info):
    if phase == "start" and gc.get_freeze_count() == 0:
        before_freeze.append(info["generation"])
gc.callbacks.append(watch)
atexit.register(lambda: print("WATCH", max(before_freeze, default=-1), len(gc.get_objects()), gc.isenabled()))
sys.argv = ["invoice-pipelines", *sys.argv[1:]]
from pipelines.cli import command
command()
"""


def run_python(code: str, *args: str, folder: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=folder,
        env={**os.environ, "DLT_DATA_DIR": str(folder / "dlt_data"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_command_walks_its_imports_neither_while_importing_nor_at_exit_and_loads_as_before(
    tmp_path: Path,
) -> None:
    world = World(seed=11, invoices=120)
    with EmulatorServer(world) as server:
        env = {
            "SOURCES__ACCELERATE__BASE_URL": server.accelerate_base_url,
            "SOURCES__ACCELERATE__API_KEY": server.accelerate_api_key,
        }
        output = run_python(WATCHED_COMMAND, "run", "--only", "accelerate", folder=tmp_path, env=env)
    watch = next(line for line in output.splitlines() if line.startswith("WATCH ")).split()
    oldest_generation_before_freeze, tracked_at_exit, enabled = int(watch[1]), int(watch[2]), watch[3]
    # Python's full collection (generation 2) ran several times while dlt and pyarrow were imported
    # (checked: `main` instead of `command` gives 2 here and ~108,000 objects below)
    assert oldest_generation_before_freeze < 2
    assert tracked_at_exit < 1_000  # all frozen at exit: the interpreter's last collections walk nothing
    assert enabled == "True"  # the job itself is collected as usual
    with duckdb.connect(str(tmp_path / "invoices.duckdb"), read_only=True) as connection:
        count = connection.sql("SELECT count(*) FROM billing.invoice").fetchall()[0][0]
    assert count == len(expected_tables(world)[0])
    assert not (tmp_path / "invoices.duckdb.wal").exists()  # the job closed DuckDB itself: nothing left


def test_imports_are_frozen_and_the_collector_is_on_again_after_them(tmp_path: Path) -> None:
    output = run_python(
        "import gc\n"
        "from pipelines.short_process import imports_without_collection\n"
        "with imports_without_collection():\n"
        "    during = gc.isenabled()\n"
        "    import json\n"
        "print(during, gc.isenabled(), gc.get_freeze_count() > 0)\n",
        folder=tmp_path,
    )
    assert output.split() == ["False", "True", "True"]


def test_a_collector_switched_off_stays_off_and_nothing_is_frozen(tmp_path: Path) -> None:
    output = run_python(
        "import gc\n"
        "from pipelines.short_process import imports_without_collection\n"
        "gc.disable()\n"
        "with imports_without_collection():\n"
        "    import json\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n",
        folder=tmp_path,
    )
    assert output.split() == ["False", "0"]
