"""Lint and types hold for the whole repository: ruff (rules and formatting) and mypy, with the
settings in pyproject.toml. A finding fails the test with the tool's own report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    path = TOOLS / tool
    if not path.exists():
        pytest.fail(f"{tool} is not installed: pip install -e '.[dev]'")
    return subprocess.run([str(path), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_rules_hold():
    done = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_ruff_formatting_holds():
    done = _run("ruff", "format", "--check", "--no-cache", "src", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


@pytest.mark.slow  # a cold mypy run over the package takes about a minute
def test_mypy_is_clean():
    done = _run("mypy", "--no-incremental")  # files and strictness: [tool.mypy] in pyproject.toml
    assert done.returncode == 0 and "Success" in done.stdout, done.stdout[-5000:] + done.stderr[-2000:]
