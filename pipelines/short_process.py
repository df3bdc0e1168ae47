"""Python's cyclic collector set for a process that runs one command and exits: the console script's only.

Why: the command imports dlt, pyarrow, numpy and DuckDB (about a million objects), then runs a job of a
fraction of a second, then exits. The collector walked those objects three times for nothing: once while
importing (~40 ms), once in the run (~40 ms) and, mostly, at exit, where the interpreter's last
collections took ~0.2 s of a 1.1 s run with nothing changed (measured in stop 20; see bench/README.md).
Objects made while importing are kept for the whole process anyway, so they are frozen out of the
collector (`gc.freeze`); what the job makes is collected as before; at exit, nothing is walked again.

Not for a long-lived process (Airflow's worker, a notebook, the test suite): freezing there keeps any
garbage of the moment forever, so only `pipelines.cli.command` uses it, never `main`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """Imports with the collector off, then what they made frozen out of it and the collector on again.
    A collector the caller had switched off stays off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def exit_without_collection() -> None:
    """Freezes every object left, so the interpreter's collections at exit walk nothing. Objects are still
    freed by their reference counts as the interpreter tears down, and `atexit` handlers (dlt's, logging's
    flush, `weakref.finalize`) still run; only garbage cycles left at the very end are not collected, as
    they would not be after `os._exit`. The job closes its files and DuckDB connections itself."""
    gc.freeze()
