"""One DuckDB connection for a whole run on the job's own DuckDB file, instead of one per dlt step and job.

dlt opens the file and closes it again for the state sync, the extract's reads, every load job and the
package's completion: nine times in a run that loads a changed day, each open ~30 ms and each close a
checkpoint. dlt takes an open DuckDB connection as credentials (and never closes one it did not open), so
the job opens the file once per run and hands that connection to every step. The file is closed when the
run ends, so notebooks and other processes can open it between runs; its checkpoint compacts tables only
when they are due (duckdb_vacuum.py) and writes no staged rows (duckdb_staging.py). DuckDB credentials the
user configured with settings of their own are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dlt

from pipelines.duckdb_memory import own_credentials
from pipelines.duckdb_staging import empty_staging_tables
from pipelines.duckdb_vacuum import vacuum_only_when_due

# dlt's DuckDB credentials keep a connection handed to them here, and carry it through the copies it
# makes for each step (`DuckDbBaseCredentials.external_conn`, `copy`, `parse_native_representation`).
_EXTERNAL_CONNECTION = "_external_conn"


@contextmanager
def one_connection(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Every DuckDB connection dlt borrows during the block is a cursor of one connection to the file."""
    credentials = own_credentials(pipeline.destination)
    if credentials is None or getattr(credentials, _EXTERNAL_CONNECTION, None) is not None:
        yield
        return
    connection = _connect(pipeline, credentials.database)
    setattr(credentials, _EXTERNAL_CONNECTION, connection)
    try:
        with vacuum_only_when_due(connection):
            yield
            empty_staging_tables(connection, pipeline)
    finally:
        setattr(credentials, _EXTERNAL_CONNECTION, None)
        connection.close()  # checkpoints what the run wrote, once


def _connect(pipeline: dlt.Pipeline, database: str) -> Any:
    import duckdb

    # The path dlt would open. dlt keeps an absolute one as it is (`WithLocalFiles.make_location`), and
    # `make_pipeline` gives one; a relative one (or `:pipeline:`) is placed by dlt's own rules, which costs
    # resolving the destination's configuration (~27 ms a run).
    path = database if os.path.isabs(database) else pipeline.destination_client().config.credentials.database
    return duckdb.connect(path)
