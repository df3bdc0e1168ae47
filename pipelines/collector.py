"""Python's cyclic collector paused where it would only walk objects it can never free: the invoices a batch
parses (acyclic, freed by their reference counts) and the modules a command imports (kept to the end).
Not a setting for the process: the collector is back as it was when the block ends, even when it fails.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_collection() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
