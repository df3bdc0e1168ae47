"""Runs `invoice-pipelines run` with dlt's `normalize` or `load` step paused at its start: the step writes a
marker file and waits, so a test can kill the process at a known point. dlt is wrapped, nothing of ours is."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dlt.pipeline.pipeline import Pipeline

from pipelines.cli import main


def pause_before(step: str, marker: Path) -> None:
    original = getattr(Pipeline, step)

    def paused(self: Pipeline, *args: object, **kwargs: object) -> object:
        marker.write_text(step)
        time.sleep(120)
        return original(self, *args, **kwargs)

    setattr(Pipeline, step, paused)


if __name__ == "__main__":
    pause_before(sys.argv[1], Path(sys.argv[2]))
    sys.exit(main(["run", "--only", "accelerate"]))
