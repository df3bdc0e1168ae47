"""The job: one dlt pipeline that loads Accelerate invoices, and a summary of what each run loaded.

The command line, the demo, the Airflow DAG and the tests all run the job through `run_job`, so they
share its behaviour: pending packages from a crashed run are finished first (dlt does this in `run`),
and the cursor is read back from the state that the load committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination.exceptions import UnknownDestinationModule
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from pipelines.accelerate import accelerate_source
from pipelines.accelerate import settings as accelerate_settings
from pipelines.errors import ConfigurationError, PipelineError

logger = logging.getLogger(__name__)

PIPELINE_NAME = "invoices"
DEFAULT_DATASET = "billing"
# Arrow tables skip dlt's row normaliser, which is what would add `_dlt_load_id`; we want it on every row
# (which load brought this version), so it is on unless the user's config says otherwise.
LOAD_ID_SETTING = "normalize.parquet_normalizer.add_dlt_load_id"
# DuckDB's own default is 80% of RAM; a merge of 500k lines then takes ~300 MB on top of the job. Capped,
# DuckDB spills to disk instead, so a scheduled job stays small. Applies only when the user configured no
# DuckDB credentials of their own (then theirs win).
DUCKDB_MEMORY_LIMIT = "160MB"


@dataclass
class RunSummary:
    """What one run did, in the terms a person checking a scheduled job wants."""

    pipeline_name: str
    destination: str
    dataset: str
    rows: dict[str, int] = field(default_factory=dict)
    since_date: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        tables = ", ".join(f"{table} {count:,}" for table, count in sorted(self.rows.items())) or "nothing"
        return [
            f"pipeline {self.pipeline_name} -> {self.destination} dataset {self.dataset} "
            f"in {self.seconds:.1f} s",
            f"  rows loaded: {tables}",
            f"  accelerate: asked for invoices since {self.since_date}; "
            f"cursor {self.cursor_before or '(none)'} -> {self.cursor_after or '(none)'}",
        ]


def make_pipeline(
    pipeline_name: str = PIPELINE_NAME,
    destination: Any = "duckdb",
    dataset_name: str = DEFAULT_DATASET,
    pipelines_dir: str | None = None,
) -> dlt.Pipeline:
    """A pipeline whose DuckDB default is `<pipeline_name>.duckdb` in the working folder (dlt's own rule)."""
    if dlt.config.get(LOAD_ID_SETTING) is None:
        dlt.config[LOAD_ID_SETTING] = True
    if destination == "duckdb" and dlt.secrets.get("destination.duckdb.credentials") is None:
        destination = duckdb_destination(f"{pipeline_name}.duckdb")
    try:
        return dlt.pipeline(
            pipeline_name=pipeline_name,
            destination=destination,
            dataset_name=dataset_name,
            pipelines_dir=pipelines_dir,
        )
    except UnknownDestinationModule:
        raise ConfigurationError(
            f"unknown destination {destination!r}: use a dlt destination name such as duckdb, postgres, "
            "bigquery, snowflake, databricks or filesystem"
        ) from None


def duckdb_destination(path: str) -> Any:
    """A DuckDB file destination with the job's memory cap (see DUCKDB_MEMORY_LIMIT)."""
    credentials = DuckDbCredentials(path)
    credentials.global_config = {"memory_limit": DUCKDB_MEMORY_LIMIT}
    return dlt.destinations.duckdb(credentials)


def run_job(
    pipeline: dlt.Pipeline,
    accelerate: Any | None = None,
    full_refresh: bool = False,
) -> RunSummary:
    """Run the given sources (the configured ones when none are given) and summarise the run."""
    started = time.monotonic()
    with friendly_errors("sources.accelerate"):
        source = accelerate if accelerate is not None else accelerate_source()
    before = _accelerate_state(pipeline)
    with friendly_errors():
        pipeline.run(source, refresh="drop_sources" if full_refresh else None)
    after = _accelerate_state(pipeline)
    return RunSummary(
        pipeline_name=pipeline.pipeline_name,
        destination=pipeline.destination.destination_name if pipeline.destination else "?",
        dataset=pipeline.dataset_name,
        rows=_rows_loaded(pipeline),
        since_date=after.get(accelerate_settings.STATE_LAST_SINCE),
        cursor_before=None if full_refresh else before.get(accelerate_settings.STATE_CURSOR),
        cursor_after=after.get(accelerate_settings.STATE_CURSOR),
        seconds=time.monotonic() - started,
    )


def _accelerate_state(pipeline: dlt.Pipeline) -> Mapping[str, Any]:
    sources = pipeline.state.get("sources", {})
    return sources.get("accelerate", {}).get("resources", {}).get("invoice", {})


def _rows_loaded(pipeline: dlt.Pipeline) -> dict[str, int]:
    trace = pipeline.last_trace
    info = trace.last_normalize_info if trace else None
    if info is None:
        return {}
    return {table: count for table, count in info.row_counts.items() if not table.startswith("_dlt")}


@contextmanager
def friendly_errors(section: str | None = None) -> Iterator[None]:
    """Turn dlt's wrapped exceptions back into our one-line `PipelineError`s."""
    try:
        yield
    except ConfigFieldMissingException as missing:
        raise _missing_setting(missing, section) from None
    except PipelineStepFailed as failed:
        cause = find_pipeline_error(failed)
        if cause is not None:
            raise cause from None
        missing = _find(failed, ConfigFieldMissingException)
        if missing is not None:
            raise _missing_setting(missing, section) from None
        raise


def find_pipeline_error(error: BaseException) -> PipelineError | None:
    return _find(error, PipelineError)


def _find(error: BaseException, kind: type) -> Any:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _missing_setting(missing: ConfigFieldMissingException, section: str | None) -> ConfigurationError:
    names = ", ".join(f"{section}.{name}" if section else name for name in missing.fields)
    env = ", ".join(
        ("__".join(section.split(".")).upper() + "__" + name.upper()) if section else name.upper()
        for name in missing.fields
    )
    return ConfigurationError(
        f"{names} is not set: put it in .dlt/secrets.toml (see .dlt/secrets.toml.example) or set {env}"
    )
