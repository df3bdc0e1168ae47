"""`python -m pipelines`: the same command line as `invoice-pipelines`."""

from pipelines.cli import command

command()
