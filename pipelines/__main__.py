"""`python -m pipelines`: the same command line as `invoice-pipelines`."""

from pipelines.cli import console_main

console_main()
