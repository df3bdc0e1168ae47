"""Invoice pipelines: Accelerate invoices and Qvalia e-invoice statuses, loaded with dlt.

The sources live in `pipelines.accelerate` and `pipelines.qvalia`; the job that runs them is
`pipelines.invoices`; the bundled API emulator is `pipelines.emulator` (tests and the demo only).
"""

import os

# Arrow's C++ code allocates from its default pool, jemalloc, which keeps what it frees for reuse: reading
# a backfill left ~28 MB in it that the load then carried (bench/backfill.py: peak 353 -> 332 MB at 100k
# invoices). The C library's allocator hands memory back (pipelines/accelerate/memory.py). Arrow reads the
# variable when it first needs its pool, so it is set here, before anything of ours imports pyarrow; a
# value the user set wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
