"""The merge skips dlt's de-duplication only while no invoice has come twice in the run: a backfill loads
the staged rows as they are, and an answer that lists an invoice twice still ends with one row per key."""

from __future__ import annotations

import copy
import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path

import dlt
import numpy as np
import pyarrow as pa
import pytest
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from pipelines.accelerate import settings
from pipelines.accelerate.repeated_ids import STAGE_DATA_DEDUPLICATED, RepeatedIds
from pipelines.duckdb_memory import MEMORY_LIMIT, UNCAPPED, cap_load_memory, capped_credentials
from pipelines.emulator import World
from pipelines.emulator.server import items_body

from conftest import Harness


@pytest.mark.parametrize("seed", range(20))
def test_repeated_ids_agrees_with_a_set(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(5_000).astype(np.int64)
    if seed % 2:  # half the cases repeat one id somewhere later in the stream
        at = int(rng.integers(1, len(ids)))
        ids = np.insert(ids, at, ids[int(rng.integers(0, at))])
    tracker, seen, repeated = RepeatedIds(), set(), False
    start = 0
    while start < len(ids):
        size = int(rng.integers(1, 400))
        batch = ids[start : start + size]
        start += size
        tracker.add(pa.array(batch))
        repeated = repeated or len(set(batch.tolist())) < len(batch) or bool(seen & set(batch.tolist()))
        seen.update(batch.tolist())
        assert tracker.seen_repeat == repeated
    assert repeated == bool(seed % 2)


def test_ids_in_sequence_collapse_into_one_range_whatever_their_order() -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(1_000, 201_000, dtype=np.int64)
    blocks = rng.permutation(len(ids) // 2_500)
    tracker = RepeatedIds()
    for block in blocks:  # each read batch a stretch of ids, shuffled within it
        tracker.add(pa.array(rng.permutation(ids[block * 2_500 : (block + 1) * 2_500])))
    assert not tracker.seen_repeat
    assert tracker.ranges == 1
    tracker.add(pa.array([200_999], pa.int64()))
    assert tracker.seen_repeat


def test_a_repeat_inside_one_batch_is_seen() -> None:
    tracker = RepeatedIds()
    tracker.add(pa.array([7, 3, 7], pa.int64()))
    assert tracker.seen_repeat


def test_a_backfill_declares_its_staged_rows_unique(harness: Harness, world: World) -> None:
    harness.run()
    tables = harness.pipeline.default_schema.tables
    assert tables["invoice"][STAGE_DATA_DEDUPLICATED] is True
    assert tables["invoice_line"][STAGE_DATA_DEDUPLICATED] is True
    harness.assert_equals_world(world)


def test_an_invoice_repeated_in_a_later_item_keeps_its_newest_version(
    harness: Harness, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings, "BATCH_SIZE", 4)
    monkeypatch.setattr(settings, "ROWS_PER_ITEM", 8)
    everything = copy.deepcopy(world.invoices_since(dt.date(2000, 1, 1)))
    assert len(everything) > 3 * settings.ROWS_PER_ITEM, "the repeat must land in a later item"
    older = next(invoice for invoice in everything if invoice["invoice_lines"])
    newer = copy.deepcopy(older)
    newer["paid_amount"] = Decimal("4321.00")
    stamp = dt.datetime.fromisoformat(older["last_update_date"]) + dt.timedelta(seconds=1)
    newer["last_update_date"] = stamp.strftime("%Y-%m-%d %H:%M:%S")
    harness.server.inject_body(items_body([*everything, newer]), api="accelerate")

    with caplog.at_level(logging.INFO, logger="pipelines.accelerate"):
        harness.run()

    assert any("came twice" in record.getMessage() for record in caplog.records)
    tables = harness.pipeline.default_schema.tables
    credentials = harness.pipeline.destination.config_params["credentials"]
    assert credentials.global_config["memory_limit"] == UNCAPPED, "only an appending load is capped"
    assert tables["invoice"][STAGE_DATA_DEDUPLICATED] is False
    assert tables["invoice_line"][STAGE_DATA_DEDUPLICATED] is False
    assert harness.query("SELECT count(*), count(DISTINCT invoice_id) FROM billing.invoice") == [
        (len(everything), len(everything))
    ]
    assert harness.query(
        "SELECT count(*) FROM (SELECT DISTINCT invoice_id, line_position FROM billing.invoice_line)"
    ) == harness.query("SELECT count(*) FROM billing.invoice_line")
    assert harness.invoices()[newer["invoice_id"]]["paid_amount"] == Decimal("4321.00")
    lines = [key for key in harness.lines() if key[0] == older["invoice_id"]]
    assert len(lines) == len(older["invoice_lines"])

    # the next answer repeats nothing: the staged rows are declared unique again
    world.advance_day()
    harness.run()
    assert harness.pipeline.default_schema.tables["invoice"][STAGE_DATA_DEDUPLICATED] is True


def test_the_memory_cap_is_lifted_only_on_credentials_made_by_the_job(tmp_path: Path) -> None:
    ours = dlt.destinations.duckdb(capped_credentials(str(tmp_path / "ours.duckdb")))
    cap_load_memory(ours, capped=False)
    assert ours.config_params["credentials"].global_config["memory_limit"] == UNCAPPED
    cap_load_memory(ours, capped=True)
    assert ours.config_params["credentials"].global_config["memory_limit"] == MEMORY_LIMIT

    users = DuckDbCredentials(str(tmp_path / "users.duckdb"))
    users.global_config = {"memory_limit": "2GB"}
    theirs = dlt.destinations.duckdb(users)
    cap_load_memory(theirs, capped=False)
    cap_load_memory(theirs, capped=True)
    assert users.global_config == {"memory_limit": "2GB"}
