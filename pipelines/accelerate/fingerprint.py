"""A fingerprint of each invoice as the API sent it, stored beside it, so a run can tell an invoice it read
again from the version it already holds.

The lookback window makes every run read again what the run before loaded. The stamp alone
(`last_update_date`) cannot say the content is the same: stamps have one-second resolution, a commit can
land in the second a run read, and a body spoiled in transit can carry the right stamp. The bytes can: an
item whose fingerprint is stored is the stored invoice, id and lines included (they are inside it), so it
is matched before it is parsed. Two different items share a 64-bit fingerprint with a probability of
about read*stored/2**64 per run (5e-11 for 30,000 read against 30,000 stored). A different fingerprint for the same
content (the API's serialiser changed, or the body had to be read the general way) only means the invoice
is loaded once more, never that a change is missed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
from xxhash import xxh3_64_intdigest

from pipelines.arrow_arrays import from_numpy

FINGERPRINT = "_fingerprint"
# Bump when the reader starts storing different values for the same bytes.
_VERSION = 1


def seed_for(timezone: str) -> int:
    """What else decides the stored values: the reading's version and the zone naive stamps are read in.
    Change either and every invoice read is loaded again, converted the new way."""
    return xxh3_64_intdigest(f"{_VERSION}|{timezone}".encode())


def of_raw_items(items: Iterable[bytes | memoryview], seed: int) -> np.ndarray:
    """One fingerprint per raw item (its exact bytes)."""
    return _as_int64(xxh3_64_intdigest(item, seed) for item in items)


def of_parsed_items(items: Iterable[dict[str, Any]], seed: int) -> np.ndarray:
    """One fingerprint per parsed item, from a canonical serialisation (keys sorted; a decimal marked as
    one, so it never hashes like the same digits sent as a string)."""
    return _as_int64(
        xxh3_64_intdigest(
            json.dumps(item, sort_keys=True, separators=(",", ":"), default=_marked).encode(), seed
        )
        for item in items
    )


def with_fingerprints(invoices: pa.Table, fingerprints: np.ndarray) -> pa.Table:
    return invoices.append_column(pa.field(FINGERPRINT, pa.int64()), from_numpy(fingerprints))


def _as_int64(digests: Iterable[int]) -> np.ndarray:
    """xxh3's 64 bits, read as a signed BIGINT (what every destination stores). xxh3 rather than a
    cryptographic hash: no one chooses these bytes to collide, and it is ~13x faster (0.03 s against
    blake2b's 0.44 s for 100k invoices)."""
    return np.fromiter(digests, np.uint64).view(np.int64)


def _marked(value: Any) -> dict[str, str]:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    return {"$" + type(value).__name__: repr(value)}
