"""Python's cyclic collector set for a process that runs one command and exits: the console script's only.

Why: the command imports dlt, pyarrow, numpy and DuckDB (over 100,000 objects the collector tracks), runs
a job of a fraction of a second, and exits. The collector walked those objects three times for nothing:
once while importing (~60 ms), once during the run (~40 ms) and, mostly, at exit, where the interpreter's
last collections took ~0.2 s of a 1.1 s run with nothing changed (bench/README.md, "The command, as users
schedule it"). What the imports make lives as long as the process anyway, so it is frozen out of the
collector (`gc.freeze`); what the job makes is collected as usual, a last time before the exit too.

Not for a process that is not ours (Airflow's worker, a notebook, the test suite): freezing there would
keep its garbage of the moment for good, so only `pipelines.cli.console_main` uses this, never `main`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.collector import paused_collection


@contextmanager
def imports_without_collection() -> Iterator[None]:
    """Imports with the collector off, then what they made frozen out of it and the collector on again.
    A collector the caller had switched off stays off."""
    was_enabled = gc.isenabled()
    with paused_collection():
        yield
        if was_enabled:
            gc.freeze()


def collect_then_freeze() -> None:
    """The job's garbage collected (its cycles' finalizers run: a DuckDB connection or a file that sits in
    a cycle is closed here, as the interpreter's own collection at exit would), then everything left frozen,
    so the interpreter's collections at exit walk nothing. With the imports frozen already, the collection
    walks only what the job made (2-3 ms after a run with nothing changed, against ~0.2 s for every object
    at exit)."""
    gc.collect()
    gc.freeze()
