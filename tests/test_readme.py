"""The README's quickstart is exactly two commands, demo first, and CI runs the same test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:sh|bash|shell)\n(.*?)```", readme, re.S)
    assert block, "the README must start with a fenced shell block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_commands_demo_first() -> None:
    commands = quickstart()
    assert len(commands) == 2
    assert commands[0].endswith("invoice-pipelines demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert quickstart()[1] in ci


def test_the_demo_command_is_the_installed_console_script() -> None:
    import shutil
    import sys

    demo = quickstart()[0].split("&&")
    assert demo[0].strip() == "python3 -m venv .venv"
    assert demo[1].strip().startswith(".venv/bin/pip install") and demo[1].strip().endswith(" -e .")
    assert demo[2].strip() == ".venv/bin/invoice-pipelines demo"
    script = Path(sys.executable).parent / "invoice-pipelines"
    assert script.exists() or shutil.which("invoice-pipelines"), (
        "pip install -e . must install the console script"
    )
