"""The job: one dlt pipeline that loads Accelerate invoices and then their Qvalia statuses, one run at a
time, and a summary of what each run loaded.

The command line, the demo and the tests all run the job through `run_job`, so they share its behaviour:
pending packages from a crashed run are finished first (dlt does this in `run`), and the cursor is read
back from the state that the load committed.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination.exceptions import UnknownDestinationModule
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed
from filelock import FileLock, Timeout

from pipelines.accelerate import accelerate_source, take_last_read
from pipelines.accelerate import settings as accelerate_settings
from pipelines.accelerate.repeated_ids import quiet_dedup_sort_warning
from pipelines.delta_tables import TABLE_FORMAT as DELTA_FORMAT
from pipelines.delta_tables import writes_delta_tables
from pipelines.duckdb_memory import cap_load_memory, capped_credentials
from pipelines.duckdb_merge import InvoiceDuckDb
from pipelines.duckdb_session import one_connection
from pipelines.errors import ConcurrentRunError, ConfigurationError, DestinationBusyError, PipelineError
from pipelines.qvalia import qvalia_source

logger = logging.getLogger(__name__)

PIPELINE_NAME = "invoices"
DEFAULT_DATASET = "billing"
# dlt loads a package's jobs on up to 20 threads. DuckDB runs one writer at a time anyway, so parallel
# jobs (the invoice and line copies) only add their working memory together: one at a time, the load's
# peak RSS is ~35 MB lower at 100k invoices and no slower (bench/backfill.py). The user's setting wins.
LOAD_WORKERS_SETTING = "load.workers"
DUCKDB_LOAD_WORKERS = 1
# dlt's extract polls for results of parallel resources every `futures_poll_interval` (10 ms), and sleeps
# that long once more when the last resource is exhausted, even with none: every extract ended with a 10 ms
# nap, two in a run that loads rows (the source's and the state's), 8% of a run with nothing changed
# (bench/incremental.py). Neither source here hands dlt futures (Qvalia's calls run on an executor of
# its own), so a short poll costs nothing. The user's setting wins.
EXTRACT_POLL_SETTING = "extract.futures_poll_interval"
EXTRACT_POLL_SECONDS = 0.001
# dlt leaves DuckDB's `supports_transactions` unset, so a merge job (delete the stored versions, insert the
# new ones) runs statement by statement in autocommit, unless its SQL happens to hold CREATE, ALTER or DROP
# (the invoice merge does, in `created_by`; the line merge does not). A run killed or failing between the
# two would leave invoices without lines until a later run. In one transaction, it is all or nothing.
# PostgreSQL is left the same way by dlt, and gets the same setting.
DUCKDB_CAPABILITIES = {"supports_transactions": True}
POSTGRES_CAPABILITIES = {"supports_transactions": True}
# dlt appends `_dlt_pipeline_state`, and with its default `create_indexes` gives every `_dlt_id` a UNIQUE
# index on PostgreSQL. A run killed after the state insert committed and before dlt recorded the job runs
# that insert again: PostgreSQL refused the same row twice, a terminal error that left the package pending
# for every later run (seen in CI). Without the index the rerun writes the state row a second time, the same
# version, which dlt's state restore reads as one. Every other table here merges from staging and
# de-duplicates there, so no index keeps anything out. The user's setting wins.
POSTGRES_INDEX_SETTING = "destination.postgres.create_indexes"
POSTGRES_INDEXES_DEFAULT = False


@dataclass
class RunSummary:
    """What one run did, in the terms a person checking a scheduled job wants."""

    pipeline_name: str
    destination: str
    dataset: str
    rows: dict[str, int] = field(default_factory=dict)
    accelerate_ran: bool = False
    since_date: str | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    accelerate_read: dict[str, int] = field(default_factory=dict)
    qvalia: dict[str, int] | None = None
    qvalia_skipped_reason: str | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        tables = ", ".join(f"{table} {count:,}" for table, count in sorted(self.rows.items())) or "nothing"
        lines = [
            f"pipeline {self.pipeline_name} -> {self.destination} dataset {self.dataset} "
            f"in {self.seconds:.1f} s",
            f"  rows loaded: {tables}",
        ]
        if self.accelerate_ran:
            asked = f"asked for invoices since {self.since_date}" if self.since_date else "read nothing"
            lines.append(
                f"  accelerate: {asked}; "
                f"cursor {self.cursor_before or '(none)'} -> {self.cursor_after or '(none)'}"
            )
            if self.accelerate_read:
                read = self.accelerate_read
                lines.append(
                    f"  accelerate: read {read.get('invoices_read', 0):,} invoices; "
                    f"{read.get('unchanged', 0):,} were stored already as they are and were left out, "
                    f"the others had {read.get('lines_read', 0):,} lines"
                    + (
                        f"; {read['older_than_stored']:,} were older than the version stored and were "
                        "not loaded"
                        if read.get("older_than_stored")
                        else ""
                    )
                )
        if self.qvalia is not None:
            q = self.qvalia
            lines.append(
                f"  qvalia: polled {q.get('polled', 0):,} open sales invoices "
                f"({q.get('final_skipped', 0):,} final ones not polled): {q.get('changed', 0):,} changed, "
                f"{q.get('unknown', 0):,} not known to Qvalia yet, {q.get('failed', 0):,} failed; "
                f"{q.get('calls', 0):,} calls, {q.get('retries', 0):,} retries"
            )
        elif self.qvalia_skipped_reason:
            lines.append(f"  qvalia: skipped ({self.qvalia_skipped_reason})")
        return lines


def make_pipeline(
    pipeline_name: str = PIPELINE_NAME,
    destination: Any = "duckdb",
    dataset_name: str = DEFAULT_DATASET,
    pipelines_dir: str | None = None,
) -> dlt.Pipeline:
    """A pipeline whose DuckDB default is `<pipeline_name>.duckdb` in the working folder (dlt's own rule)."""
    if _is_duckdb(destination) and dlt.config.get(LOAD_WORKERS_SETTING) is None:
        dlt.config[LOAD_WORKERS_SETTING] = DUCKDB_LOAD_WORKERS
    if dlt.config.get(EXTRACT_POLL_SETTING) is None:
        dlt.config[EXTRACT_POLL_SETTING] = EXTRACT_POLL_SECONDS
    named_duckdb = destination == "duckdb"
    if named_duckdb:
        destination = InvoiceDuckDb(**DUCKDB_CAPABILITIES)
    elif destination == "postgres":
        destination = postgres_destination()
    pipeline = _pipeline(pipeline_name, destination, dataset_name, pipelines_dir)
    if named_duckdb and (path := plain_duckdb_file(pipeline)) is not None:
        pipeline = _pipeline(pipeline_name, duckdb_destination(path), dataset_name, pipelines_dir)
    return pipeline


def postgres_destination(credentials: Any = None) -> Any:
    """dlt's PostgreSQL as the job uses it: merges in transactions, no unique index on `_dlt_id` unless the
    user sets one (the default goes into dlt's configuration as the other defaults in `make_pipeline` do,
    so dlt's own resolution lets a global or a pipeline's setting win), parquet copied through ADBC where
    its driver is installed (postgres_arrow.py). Imported here: dlt's PostgreSQL client needs psycopg2,
    which only the `postgres` extra installs."""
    try:
        from pipelines.postgres_arrow import InvoicePostgres
    except ImportError as missing:
        raise ConfigurationError(
            f"the postgres destination needs {missing.name or 'psycopg2'}: "
            "pip install 'invoice-pipelines[postgres]'"
        ) from None
    if dlt.config.get(POSTGRES_INDEX_SETTING) is None:
        dlt.config[POSTGRES_INDEX_SETTING] = POSTGRES_INDEXES_DEFAULT
    return InvoicePostgres(credentials, **POSTGRES_CAPABILITIES)


def _pipeline(
    pipeline_name: str, destination: Any, dataset_name: str, pipelines_dir: str | None
) -> dlt.Pipeline:
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


def plain_duckdb_file(pipeline: dlt.Pipeline) -> str | None:
    """The DuckDB file dlt resolves for the pipeline (its default, or a path set in any of dlt's config
    places), when the credentials name only that file: such a file gets the job's memory cap and one
    connection a run (duckdb_memory.py, duckdb_session.py). None for credentials with settings of their
    own (`global_config`, `extensions`, `read_only`, ...), which are used exactly as given."""
    try:
        credentials = pipeline.destination_client().config.credentials
    except Exception:  # a configuration dlt cannot resolve: the run reports it, the usual way
        return None
    defaults = DuckDbCredentials()
    if any(getattr(credentials, name) != getattr(defaults, name) for name in _DUCKDB_SETTINGS):
        return None
    return str(credentials.database)


# What a user may set on DuckDB credentials besides the file; any of them keeps dlt's credentials as given.
_DUCKDB_SETTINGS = (
    "read_only",
    "extensions",
    "global_config",
    "pragmas",
    "statements",
    "local_config",
    "session_timezone",
)


def _is_duckdb(destination: Any) -> bool:
    kind = destination if isinstance(destination, str) else getattr(destination, "destination_type", "")
    return kind == "duckdb" or str(kind).endswith(".duckdb")


def duckdb_destination(path: str) -> Any:
    """A DuckDB file destination with the job's memory cap (see duckdb_memory.py), merging in transactions
    (see DUCKDB_CAPABILITIES) and deleting replaced lines by their merge key (see duckdb_merge.py)."""
    return InvoiceDuckDb(capped_credentials(path), **DUCKDB_CAPABILITIES)


@contextmanager
def exclusive_run(pipeline: dlt.Pipeline) -> Iterator[None]:
    """One run at a time per pipeline working folder: two would write the same state and load packages.
    The lock is an OS file lock, released by the OS even when a run is killed, so it never goes stale."""
    path = Path(pipeline.pipelines_dir) / f"{pipeline.pipeline_name}.run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConcurrentRunError(
            f"another run of pipeline {pipeline.pipeline_name!r} is in progress (it holds {path}): "
            "wait for it to finish, or make your scheduler run one at a time"
        ) from None
    try:
        yield
    finally:
        lock.release()


def run_job(
    pipeline: dlt.Pipeline,
    accelerate: Any | None = None,
    qvalia: Any | None = None,
    only: str | None = None,
    full_refresh: bool = False,
) -> RunSummary:
    """Accelerate first, then the Qvalia statuses of what it loaded, in one pipeline. Sources not given
    are built from the configuration; Qvalia is skipped (and said so) when none of it is configured.

    A full refresh drops Accelerate's tables and cursor and reloads from start_date; for Qvalia it polls
    every sales invoice again, final ones included, and keeps the history (which no API could rebuild).
    """
    # one DuckDB connection for both sources: the file is not let go between them (duckdb_session.py)
    with exclusive_run(pipeline), friendly_errors(), one_connection(pipeline):
        return _run_sources(pipeline, accelerate, qvalia, only, full_refresh)


def _run_sources(
    pipeline: dlt.Pipeline, accelerate: Any | None, qvalia: Any | None, only: str | None, full_refresh: bool
) -> RunSummary:
    started = time.monotonic()
    summary = RunSummary(
        pipeline_name=pipeline.pipeline_name,
        destination=pipeline.destination.destination_name if pipeline.destination else "?",
        dataset=pipeline.dataset_name,
    )
    if only in (None, "accelerate"):
        with friendly_errors("sources.accelerate"):
            source = accelerate if accelerate is not None else accelerate_source()
        before = _resource_state(pipeline, "accelerate", "invoice")
        take_last_read(pipeline)  # forgets what a run that failed after reading left there
        run_source(pipeline, source, refresh="drop_sources" if full_refresh else None)
        _add_rows(summary, pipeline)
        after = _resource_state(pipeline, "accelerate", "invoice")
        summary.accelerate_ran = True
        summary.cursor_before = None if full_refresh else before.get(accelerate_settings.STATE_CURSOR)
        summary.cursor_after = after.get(accelerate_settings.STATE_CURSOR)
        read = take_last_read(pipeline)
        if read is not None:
            summary.since_date, summary.accelerate_read = read.since_date, dict(read.figures)
    if only in (None, "qvalia"):
        if qvalia is None and only is None and not qvalia_configured():
            summary.qvalia_skipped_reason = "not configured: set sources.qvalia.api_key and account_reg_no"
        else:
            with friendly_errors("sources.qvalia"):
                source = qvalia if qvalia is not None else qvalia_source(poll_final=full_refresh)
            run_source(pipeline, source)
            _add_rows(summary, pipeline)
            summary.qvalia = dict(_resource_state(pipeline, "qvalia", "invoice_status").get("last_run", {}))
    summary.seconds = time.monotonic() - started
    return summary


def run_source(pipeline: dlt.Pipeline, source: Any, refresh: str | None = None) -> None:
    """`pipeline.run`, after finishing what an interrupted run left behind. Given pending packages, dlt's
    `run` loads only those and silently drops the data it was handed ("will not be extracted"): a rerun
    after a crash in normalize or load would then load nothing new, and a create-from-order record would
    be lost. So pending packages are normalized and loaded first, then the source runs. On the job's own
    DuckDB file, all of it goes through one connection (see duckdb_session.py)."""
    quiet_dedup_sort_warning()
    # every load runs without DuckDB's cap but one the Accelerate resource caps: a backfill that appends
    # (duckdb_memory.py); pending packages, Qvalia's merges and create-from-order included
    cap_load_memory(pipeline.destination, capped=False)
    with friendly_errors(), one_connection(pipeline):
        if pipeline.has_pending_data:
            logger.warning(
                "finishing the load packages of an interrupted run of %s first", pipeline.pipeline_name
            )
            pipeline.normalize()
            pipeline.load()
        # dlt's filesystem destination merges only Delta (or Iceberg) tables; plain parquet files would
        # take every invoice version again on each run and keep removed lines.
        table_format = None
        if writes_delta_tables(pipeline):
            require_deltalake()
            table_format = DELTA_FORMAT
        try:
            pipeline.run(source, refresh=refresh, table_format=table_format)
        finally:
            cap_load_memory(pipeline.destination, capped=False)


def require_deltalake() -> None:
    if importlib.util.find_spec("deltalake") is None:
        raise ConfigurationError(
            "the filesystem destination writes Delta tables, which needs the deltalake package: "
            "pip install 'invoice-pipelines[filesystem]' (or pip install 'dlt[deltalake]')"
        )


def qvalia_configured() -> bool:
    return dlt.secrets.get("sources.qvalia.api_key") is not None or (
        dlt.config.get("sources.qvalia.account_reg_no") is not None
    )


def _resource_state(pipeline: dlt.Pipeline, source: str, resource: str) -> Mapping[str, Any]:
    sources = pipeline.state.get("sources", {})
    return sources.get(source, {}).get("resources", {}).get(resource, {})


def _add_rows(summary: RunSummary, pipeline: dlt.Pipeline) -> None:
    for table, count in _rows_loaded(pipeline).items():
        summary.rows[table] = summary.rows.get(table, 0) + count


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
    except Exception as error:
        known = _user_fixable(error, section)
        if known is None:
            raise
        raise known from None


def _user_fixable(error: Exception, section: str | None) -> PipelineError | None:
    """Ours, or one we can name, found inside dlt's wrapped exception; a DuckDB file held elsewhere also
    outside dlt's steps (the job's own connection is opened before them)."""
    if isinstance(error, PipelineStepFailed):
        cause = find_pipeline_error(error)
        if cause is not None:
            return cause
        missing = _find(error, ConfigFieldMissingException)
        if missing is not None:
            return _missing_setting(missing, section)
    return _busy_duckdb_file(error)


# A DuckDB file open in one process, even read-only, cannot be opened for writing in another; DuckDB
# names the holder.
_DUCKDB_LOCK = re.compile(r'Could not set lock on file "(?P<path>.+?)": (?:.*?\(PID (?P<pid>\d+)\))?', re.S)


def _busy_duckdb_file(error: BaseException) -> DestinationBusyError | None:
    """A DuckDB file held by another process (a notebook, the DuckDB CLI) is a case the user can fix."""
    for link in _chain(error):
        held = _DUCKDB_LOCK.search(str(link))
        if held is not None:
            holder = f"another process (PID {held['pid']})" if held["pid"] else "another process"
            return DestinationBusyError(
                f"the DuckDB file {held['path']} is open in {holder}: close its connection there (a "
                "notebook, the DuckDB CLI) and run again"
            )
    return None


def find_pipeline_error(error: BaseException) -> PipelineError | None:
    return _find(error, PipelineError)


def _find(error: BaseException, kind: type) -> Any:
    return next((link for link in _chain(error) if isinstance(link, kind)), None)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and its causes, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def _missing_setting(missing: ConfigFieldMissingException, section: str | None) -> ConfigurationError:
    keys = [_setting_key(missing, name, section) for name in missing.fields]
    env = ", ".join(key.replace(".", "__").upper() for key in keys)
    return ConfigurationError(
        f"{', '.join(keys)} is not set: put it in .dlt/secrets.toml (see .dlt/secrets.toml.example) or set {env}"
    )


def _setting_key(missing: ConfigFieldMissingException, name: str, section: str | None) -> str:
    """The full key of a missing setting: ours know their section; dlt's (destination credentials) are read
    off the lookup traces, whose longest section path is the one users write in their toml."""
    if "." in name:
        return name
    if section:
        return f"{section}.{name}"
    sections = max(_trace_sections(missing.traces.get(name, [])), key=len, default=[])
    if not sections:
        return name
    return ".".join(sections if sections[-1] == name else [*sections, name])


def _trace_sections(traces: Any) -> Iterator[list[str]]:
    for trace in traces if isinstance(traces, list) else [traces]:
        if hasattr(trace, "sections"):
            yield list(trace.sections)
        for nested in getattr(trace, "traces", {}).values():
            yield from _trace_sections(nested)
