"""The console script's collector settings (pipelines/short_process.py), each in a process of its own:
frozen objects in the test process would keep its garbage, DuckDB connections included, for the rest of
the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from pipelines.emulator import EmulatorServer, World

from conftest import environment_without_dlt_settings, expected_tables

# Runs the console script's entry point with a watch on Python's collector: every collection that starts
# while dlt is being imported (once dlt is in `sys.modules`, before anything is frozen), and what the
# collector still tracks once every exit handler but this one (registered first, so run last) is done.
WATCHED_COMMAND = """
import atexit, gc, sys
while_importing = []
def watch(phase, info):
    if phase == "start" and gc.get_freeze_count() == 0 and "dlt" in sys.modules:
        while_importing.append(info["generation"])
gc.callbacks.append(watch)
atexit.register(lambda: print("WATCH", len(while_importing), len(gc.get_objects()), gc.isenabled()))
sys.argv = ["invoice-pipelines", *sys.argv[1:]]
from pipelines.cli import console_main
console_main()
"""


def run_python(code: str, *args: str, folder: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=folder,
        env={**environment_without_dlt_settings(), "DLT_DATA_DIR": str(folder / "dlt_data"), **(env or {})},
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
    collections_while_importing, tracked_at_exit, enabled = int(watch[1]), int(watch[2]), watch[3]
    # checked: with `main` instead of `console_main`, nothing is ever frozen and 262 collections count
    # here (imports and run); without the freeze at exit, ~9,000 objects are left for the interpreter's
    # last collections to walk
    assert collections_while_importing == 0
    assert tracked_at_exit < 1_000
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


def test_the_jobs_garbage_is_collected_before_the_exit_freeze(tmp_path: Path) -> None:
    """A DuckDB connection or a file left in a reference cycle is closed by its finalizer when the cycle is
    collected: the freeze at exit must not leave it for good."""
    output = run_python(
        "import gc\n"
        "from pipelines.short_process import collect_then_freeze, imports_without_collection\n"
        "with imports_without_collection():\n"
        "    import json\n"
        "class Closes:\n"
        "    def __del__(self):\n"
        "        print('closed', flush=True)\n"
        "left = Closes()\n"
        "left.cycle = left\n"
        "del left\n"
        "collect_then_freeze()\n"
        "print('frozen', len(gc.get_objects()))\n",
        folder=tmp_path,
    )
    closed, frozen = output.splitlines()
    assert closed == "closed" and frozen.split()[0] == "frozen"
    assert int(frozen.split()[1]) < 100
