"""`python -m pipelines`: the same command line as `invoice-pipelines`."""

from pipelines.cli import main

raise SystemExit(main())
