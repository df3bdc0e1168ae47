"""The rules that decide, from the stored versions, which invoices a run reads and leaves out, checked
directly on small tables: what a merge of everything read would keep must stay what is kept."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from pipelines.accelerate.stored_versions import StoredVersions

T0 = datetime(2024, 10, 1, 9, 0, tzinfo=UTC)


def micros(seconds: int) -> int:
    return int(T0.timestamp() + seconds) * 1_000_000


def stored(*versions: tuple[int, int, int | None]) -> StoredVersions:
    """(invoice_id, fingerprint, seconds after T0 or None) per stored invoice."""
    ids, fingerprints, stamps = zip(*versions, strict=True)
    null = np.iinfo(np.int64).min
    return StoredVersions(
        np.array(ids, np.int64),
        np.array(fingerprints, np.int64),
        np.array([null if s is None else micros(s) for s in stamps], np.int64),
    )


def invoices(*rows: tuple[int, int | None]) -> tuple[pa.Table, pa.Table]:
    """Parsed invoices (invoice_id, seconds after T0 or None) with one line each."""
    ids = [row[0] for row in rows]
    stamps = [None if row[1] is None else micros(row[1]) for row in rows]
    table = pa.table(
        {
            "invoice_id": pa.array(ids, pa.int64()),
            "last_update_date": pa.array(stamps, pa.int64()).cast(pa.timestamp("us", "UTC")),
        }
    )
    lines = pa.table({"invoice_id": pa.array(ids, pa.int64()), "line_position": pa.array([1] * len(ids))})
    return table, lines


def test_stored_versions_are_left_out_and_others_are_not() -> None:
    versions = stored((1, 11, 0), (2, 22, 5), (3, 33, 1))
    left_out = versions.leave_out(np.array([22, 99, 11, 33], np.int64))
    assert left_out.tolist() == [True, False, True, True]
    assert versions.newest_left_out() == datetime.fromtimestamp(T0.timestamp() + 5, UTC)


def test_a_stored_version_whose_stamp_cannot_be_read_is_not_left_out() -> None:
    """Without its stamp neither the cursor nor the newest-wins rule could account for it."""
    versions = stored((1, 11, 0), (2, 22, None))
    assert versions.leave_out(np.array([11, 22], np.int64)).tolist() == [True, False]


def test_an_invoice_stored_twice_is_not_left_out() -> None:
    """Two rows for one id (a table edited by hand): loading the invoice lets the merge leave one."""
    versions = stored((1, 20, 5), (1, 50, 10), (2, 22, 0))
    assert versions.leave_out(np.array([20, 50, 22], np.int64)).tolist() == [False, False, True]
    kept, _ = versions.keep_newer(*invoices((1, 7)))
    assert kept["invoice_id"].to_pylist() == [1]


def test_nothing_is_left_out_when_nothing_is_stored() -> None:
    versions = StoredVersions.none()
    assert versions.leave_out(np.array([1, 2], np.int64)).tolist() == [False, False]
    read = invoices((1, 0))
    assert versions.keep_newer(*read) == read
    assert versions.newest_left_out() is None


def test_a_version_older_than_the_stored_one_left_out_is_dropped_with_its_lines() -> None:
    versions = stored((1, 11, 10), (2, 22, 10))
    versions.leave_out(np.array([11, 22], np.int64))
    kept, lines = versions.keep_newer(*invoices((1, 9), (2, 10), (3, 0)))
    assert kept["invoice_id"].to_pylist() == [2, 3], "the older is dropped, the same second is kept"
    assert lines["invoice_id"].to_pylist() == [2, 3]


def test_a_version_with_no_stamp_loses_to_a_stored_one() -> None:
    versions = stored((1, 11, 10))
    versions.leave_out(np.array([11], np.int64))
    kept, _ = versions.keep_newer(*invoices((1, None), (2, None)))
    assert kept["invoice_id"].to_pylist() == [2]


def test_a_version_is_compared_only_with_a_stored_one_this_run_left_out() -> None:
    versions = stored((1, 11, 10))
    kept, _ = versions.keep_newer(*invoices((1, 0)))
    assert kept["invoice_id"].to_pylist() == [1], "an older version the API sends alone is loaded"


def test_the_stored_version_read_after_an_older_one_was_loaded_goes_to_the_merge_too() -> None:
    versions = stored((1, 11, 10), (2, 22, 10), (3, 33, 10))
    versions.keep_newer(*invoices((1, 5), (2, 15), (3, 10)))
    left_out = versions.leave_out(np.array([11, 22, 33], np.int64))
    # 1's stored version is newer than the one loaded; 2's is older; 3's is as new (either may win)
    assert left_out.tolist() == [False, True, True]
