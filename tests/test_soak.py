"""The soak (bench/soak.py) at a small size: business days against the emulator with 20% of calls faulted,
a run that gives up run again, and the tables equal to the world after every day and at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_faults_on_a_fifth_of_calls_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    figures_file = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            *("--days", "2", "--invoices", "150", "--fault-rate", "0.2", "--outage-days", "1"),
            *("--max-retry-delay", "0.1", "--json", str(figures_file)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(figures_file.read_text())

    assert (figures["lost"], figures["duplicates"], figures["wrong"], figures["extra"]) == (0, 0, 0, 0)
    assert figures["unexpected_errors"] == []
    assert figures["rows"]["invoice"] > 150 and figures["rows"]["invoice_status"] > 0
    assert all(figures["faults"][kind] > 0 for kind in ("429", "5xx", "drop", "timeout")), figures["faults"]
    # The outage day: Accelerate failed past the retry budget, the run gave up and was run again.
    assert figures["reruns"] >= 1 and len(figures["gave_up"]) == figures["reruns"]
    assert all("run the job again later" in reason for reason in figures["gave_up"])
    assert figures["retries"]["accelerate"] > 0 and figures["retries"]["qvalia"] > 0
    # Every fault was either retried or ended a give-up (a spurious timeout could only add retries).
    assert figures["faults_unaccounted"] <= 0
    assert "OK: nothing lost, duplicated or wrong" in result.stdout
