"""Runs `invoice-pipelines` with dlt paused at a known point, so a test can kill the process there: the
paused code writes a marker file and waits. dlt is wrapped, nothing of ours is.

    python pause_at_step.py POINT MARKER [--schema NAME] [--table NAME] [-- CLI ARGUMENTS]

POINT is where to pause:
  normalize, load      at the start of that step
  job-committed        a load job has written to the destination (committed), but dlt has not yet recorded
                       it as done: a rerun runs it again
  merge-uncommitted    a merge job's SQL has run inside its transaction, which is not committed yet
  package-completing   every job of the package is done; the load is not yet recorded in _dlt_loads
--schema, --table and --file-format (sql for merge jobs) restrict the pause to the jobs of one source's
package, of one table, of one kind. The CLI arguments default to `run --only accelerate`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlt.common.destination.client import RunnableLoadJob
from dlt.destinations.job_client_impl import SqlLoadJob
from dlt.load.load import Load
from dlt.pipeline.pipeline import Pipeline

from pipelines.cli import main

POINTS = ("normalize", "load", "job-committed", "merge-uncommitted", "package-completing")


class Pause:
    def __init__(self, marker: Path, schema: str | None, table: str | None, file_format: str | None) -> None:
        self.marker, self.schema, self.table, self.file_format = marker, schema, table, file_format

    def here(self, what: str) -> None:
        self.marker.write_text(what)
        time.sleep(120)

    def wanted(self, schema: Any, job: RunnableLoadJob | None = None) -> bool:
        info = job.job_file_info() if job is not None else None
        return (
            (self.schema is None or schema.name == self.schema)
            and (self.table is None or (info is not None and info.table_name == self.table))
            and (self.file_format is None or (info is not None and info.file_format == self.file_format))
        )

    def install(self, point: str) -> None:
        getattr(self, "_" + point.replace("-", "_"))()

    def _normalize(self) -> None:
        self._before_step("normalize")

    def _load(self) -> None:
        self._before_step("load")

    def _before_step(self, step: str) -> None:
        original = getattr(Pipeline, step)

        def paused(pipeline: Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.here(step)
            return original(pipeline, *args, **kwargs)

        setattr(Pipeline, step, paused)

    def _job_committed(self) -> None:
        original = RunnableLoadJob._release

        def paused(job: RunnableLoadJob, next_state: Any) -> None:
            if next_state == "completed" and self.wanted(job._schema, job):
                self.here(f"job-committed {job.file_name()}")
            original(job, next_state)

        RunnableLoadJob._release = paused  # type: ignore[method-assign]

    def _merge_uncommitted(self) -> None:
        original = SqlLoadJob.maybe_transaction

        @contextlib.contextmanager
        def paused(job: SqlLoadJob, sql: str) -> Iterator[None]:
            with original(job, sql):
                yield
                if self.wanted(job._schema, job):
                    self.here(f"merge-uncommitted {job.file_name()}")

        SqlLoadJob.maybe_transaction = paused  # type: ignore[method-assign]

    def _package_completing(self) -> None:
        original = Load.complete_package

        def paused(load: Load, load_id: str, schema: Any, aborted: bool = False) -> None:
            if not aborted and self.wanted(schema):
                self.here(f"package-completing {load_id}")
            original(load, load_id, schema, aborted)

        Load.complete_package = paused  # type: ignore[method-assign]


if __name__ == "__main__":
    arguments = sys.argv[1:]
    cli = ["run", "--only", "accelerate"]
    if "--" in arguments:
        cli = arguments[arguments.index("--") + 1 :]
        arguments = arguments[: arguments.index("--")]
    parser = argparse.ArgumentParser()
    parser.add_argument("point", choices=POINTS)
    parser.add_argument("marker", type=Path)
    parser.add_argument("--schema")
    parser.add_argument("--table")
    parser.add_argument("--file-format")
    options = parser.parse_args(arguments)
    Pause(options.marker, options.schema, options.table, options.file_format).install(options.point)
    sys.exit(main(cli))
