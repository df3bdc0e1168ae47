"""The GitHub Actions workflows users copy: they pass actionlint, and the scheduled one runs the command
the README documents, with the contract's environment variables, never two at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    beside_python = Path(sys.executable).parent / "actionlint"
    found = str(beside_python) if beside_python.exists() else shutil.which("actionlint")
    assert found, "actionlint is part of the dev extra: pip install -e '.[dev]'"
    return found


def test_workflows_pass_actionlint() -> None:
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert len(files) >= 2
    result = subprocess.run([actionlint(), "-no-color", *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scheduled_job_runs_the_documented_command_without_overlap() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "invoices.yml").read_text(encoding="utf-8"))
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert workflow["concurrency"]["cancel-in-progress"] is False
    job = workflow["jobs"]["load"]
    commands = [step["run"] for step in job["steps"] if "run" in step]
    load = next(command for command in commands if command.startswith("invoice-pipelines"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert load.split(" $")[0].split(' "')[0] in readme  # `invoice-pipelines run --destination`
    assert "invoice-pipelines run --destination" in readme
    for variable in (
        "SOURCES__ACCELERATE__API_KEY",
        "SOURCES__QVALIA__API_KEY",
        "SOURCES__QVALIA__ACCOUNT_REG_NO",
    ):
        assert variable in job["env"]
    assert "secrets." in job["env"]["SOURCES__ACCELERATE__API_KEY"]


def test_ci_workflow_runs_the_ci_script() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text(encoding="utf-8"))
    commands = [step.get("run") for step in workflow["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in commands
