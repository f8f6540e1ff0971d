"""Shared fixtures: one torch thread (small models on 2 shared cores run fastest so), the real
MOSI folder beside the repo, and one text-feature cache for the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOSI = SHARED / "data" / "mosi"


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mosi_dir() -> Path:
    if not (MOSI / "label.csv").exists():
        pytest.skip(f"real MOSI folder not present at {MOSI}")
    return MOSI


@pytest.fixture(scope="session")
def mosi_cache(tmp_path_factory) -> Path:
    """Text features of MOSI are encoded once per session and shared by every test that needs them."""
    return tmp_path_factory.mktemp("mosi_text_cache")


# ---- hostile inputs: the real CLI in a subprocess, with its exit status, stderr, time and peak memory

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float


def assert_refused(run: CliRun, *culprits: str, max_mb: float = 1500, max_seconds: float = 60) -> str:
    """Exit 2, exactly one stderr line ``msalign: error: ...`` naming every culprit, no traceback,
    bounded peak memory and time. Returns the line."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, f"exit {run.returncode}, stderr: {run.stderr[-2000:]}"
    assert len(lines) == 1, f"expected one line, got: {run.stderr[-2000:]}"
    line = lines[0]
    assert line.startswith("msalign: error: ") and "internal error" not in line and "Traceback" not in line, line
    for culprit in culprits:
        assert culprit in line, f"{culprit!r} not named in: {line}"
    assert run.peak_mb < max_mb, f"peak RSS {run.peak_mb:.0f} MB"
    assert run.seconds < max_seconds, f"took {run.seconds:.1f} s"
    return line


# Many hostile files through one interpreter: the CLI's imports take seconds on a loaded machine, so
# each case runs msalign.cli.main in the same child, with its own stderr, status, time and the
# child's peak RSS so far (monotonic, so every case is bounded by the last value). A crash by
# signal or a hang still fails the whole batch (returncode / timeout).
_BATCH_WRAPPER = """
import io, json, os, resource, sys, time
from msalign.cli import main
def peak_kb():
    # VmHWM is this process's own peak; ru_maxrss keeps the peak of the forked parent's pages across
    # exec on Linux, so a child of a 3 GB pytest process would report 3 GB
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cases = json.load(open(sys.argv[1]))
out = []
for case in cases:
    os.chdir(case["cwd"])
    err, keep = io.StringIO(), sys.stderr
    sys.stderr = err
    start = time.monotonic()
    try:
        rc = main(case["argv"])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stderr = keep
    out.append({"rc": rc, "stderr": err.getvalue(), "seconds": time.monotonic() - start,
                "peak_kb": peak_kb()})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
"""


def run_cli_batch(cases: list[list[str]], tmp: Path, timeout: float = 180, env: dict | None = None) -> list[CliRun]:
    """``msalign ARGV`` for each case (in ``tmp``) in one fresh interpreter; see _BATCH_WRAPPER."""
    import json

    spec, result = tmp / f".cases_{time.monotonic_ns()}.json", tmp / f".results_{time.monotonic_ns()}.json"
    spec.write_text(json.dumps([{"argv": list(map(str, a)), "cwd": str(tmp)} for a in cases]))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    environment.pop("MSALIGN_DEBUG", None)
    done = subprocess.run([sys.executable, "-c", _BATCH_WRAPPER, str(spec), str(result)], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=tmp, stdin=subprocess.DEVNULL)
    import json as _json

    runs = _json.loads(result.read_text()) if result.exists() else []
    assert done.returncode == 0 and len(runs) == len(cases), (
        f"batch child died (exit {done.returncode}) after {len(runs)} of {len(cases)} cases; "
        f"next: {cases[len(runs)] if len(runs) < len(cases) else None}; stderr: {done.stderr[-2000:]}")
    spec.unlink()
    result.unlink()
    return [CliRun(r["rc"], "", r["stderr"], r["seconds"], r["peak_kb"] / 1024) for r in runs]


SENTIMENT_WORDS = ["great", "awful", "fine", "boring", "lovely", "bad", "superb", "dull"]


def write_review_folder(data: Path, seed: int = 0) -> Path:
    """A feature directory of 24 clips (12 train / 6 valid / 6 test): real review sentences in
    label.csv, labels +-2 alternating, and a random 5-d utterance audio vector."""
    import csv

    import numpy as np

    from msalign.data.feature_dir import save_modality

    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    with open(data / "label.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for i in range(24):
            word = SENTIMENT_WORDS[i % len(SENTIMENT_WORDS)]
            mode = "train" if i < 12 else "valid" if i < 18 else "test"
            writer.writerow([f"v{i}", "1", f"the movie was really {word} " + "and long " * (i % 3),
                             2.0 if i % 2 == 0 else -2.0, "", mode])
            ids.append(f"v{i}_1")
    save_modality(data, "audio", ids, rng.normal(size=(24, 5)))
    return data
