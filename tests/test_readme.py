"""The README is literally executable (issue 19, item 1).

Every ``msalign`` command in the README's bash blocks must parse with the real parser; the cheap
ones run, in README order, in a temporary directory, shrunk: one epoch, one seed (1111), a smaller
synthetic dataset. Commands that need data or machines a test does not have (the real MOSI folder,
a MOSEI store, videos, several GPUs, a Ray cluster) are listed with the reason they are skipped.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from msalign.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SMALL = "synthetic:n_train=64,n_valid=32,n_test=32"
# substring -> why the command does not run here (it is still parsed)
NOT_RUN = {
    "../shared/": "the real MOSI folder",
    "stores/mosei": "a MOSEI feature store",
    "mosei/unaligned_50.pkl": "the MOSEI pickle",
    "runs/feat": "features extracted from videos (msalign extract, media tests)",
    "my_": "the reader's own videos / datasets",
    "runs/mvsa": "an image-text dataset described from the reader's own folder",
    "--backend ray": "a Ray instance (tests/test_experiments_scheduling.py runs Ray)",
    "--devices 4": "four GPUs",
}
TRAINING = {"train", "benchmark", "sweep"}


def readme_commands() -> list[str]:
    """Every ``msalign ...`` command of the README's bash blocks, in order (``&&`` chains split)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            parts: list[list[str]] = [[]]
            for word in words:
                parts.append([]) if word == "&&" else parts[-1].append(word)
            commands += [shlex.join(argv) for argv in parts if argv and argv[0] in ("msalign", ".venv/bin/msalign")]
    return commands


def shrink(argv: list[str]) -> list[str]:
    """One epoch, seed 1111 and the small synthetic set for a training command; others as written."""
    argv = [SMALL if a == "synthetic" else a for a in argv]
    if argv and argv[0] in TRAINING:
        if "--seeds" in argv:
            argv[argv.index("--seeds") + 1] = "1111"
        else:
            argv += ["--seeds", "1111"]
        argv += ["--epochs", "1"]
    return argv


def test_the_readme_shows_commands_and_every_model():
    commands = readme_commands()
    assert len(commands) >= 15
    text = README.read_text()
    from msalign.models import list_models

    for name in list_models():
        assert f"| `{name}` |" in text, f"the Models table lacks {name}"
    assert "source .venv/bin/activate" in text
    for line in text.splitlines():  # a claim of time says the machine it was measured on
        if re.search(r"\b\d+(\.\d+)?\s*(minutes?|seconds?|hours?|min|s)\b|a few minutes|one-minute", line):
            assert re.search(r"core|GPU|CPU", line), f"a time claim without its machine: {line}"


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command):
    argv = shlex.split(command)[1:]
    if argv == ["--version"]:
        return  # argparse's version action exits; test_readme_commands_run runs it
    build_parser().parse_args(argv)  # an unknown option or subcommand exits 2


@pytest.mark.slow
def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran, skipped = [], []
    for command in readme_commands():
        reason = next((why for key, why in NOT_RUN.items() if key in command), None)
        if reason:
            skipped.append((command, reason))
            continue
        argv = shrink(shlex.split(command)[1:])
        if argv == ["--version"]:
            with pytest.raises(SystemExit) as stop:
                main(argv)
            code = stop.value.code
        else:
            code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"README command failed: {command}\n{captured.err[-2000:]}"
        ran.append(command)
    assert len(ran) >= 14, (ran, skipped)  # every cheap command; the others need data or machines (NOT_RUN)
    assert (tmp_path / "runs" / "dec" / "report" / "report.md").is_file()
    assert (tmp_path / "runs" / "watched" / "seed_1111" / "logs" / "metrics.csv").is_file()


@pytest.mark.slow
def test_the_entry_point_the_readme_names():
    entry = ROOT / ".venv" / "bin" / "msalign"
    if not entry.exists():
        pytest.skip(f"{entry} not installed (bash scripts/setup.sh)")
    proc = subprocess.run(
        [str(entry), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 0 and proc.stdout.startswith("msalign "), proc.stderr
    assert sys.version_info >= (3, 11)
