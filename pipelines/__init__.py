"""Invoice pipelines: Accelerate invoices and Qvalia e-invoice statuses, loaded with dlt.

The sources live in `pipelines.accelerate` and `pipelines.qvalia`; the job that runs them is
`pipelines.invoices`; the bundled API emulator is `pipelines.emulator` (tests and the demo only).
"""
